#!/usr/bin/env bash
# Bash completion (completion/kata-snapshot) against the built binary: subcommands, options,
# option values (--vmstate, --mode), nested subcommands (guest) and files, through compgen as
# bash runs it on Tab.
set -uo pipefail
tool=$1
script=${2:-$(dirname "$0")/../../completion/kata-snapshot}
# shellcheck source=/dev/null
source "$script"
failed=0
complete_words() { # WORDS...: what Tab offers after them
  COMP_WORDS=("$tool" "$@")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _kata_snapshot
  printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}
expect() { # WANT WORDS...
  local want=$1 got
  shift
  got=$(complete_words "$@")
  if [ "$got" != "$want" ]; then
    echo "FAILED: [$*] completes to [$got], not [$want]"
    failed=1
  fi
}
expect "save" sa
expect "check check-kernel" che
expect "--vmstate" save --vm
expect "auto mapped-ram multifd shared-ram stream" save --vmstate ""
expect "mapped-ram multifd" save --vmstate m
expect "auto live stop" save --mode ""
expect "--decrypt-key" load --decr
expect "containers copy" co
expect "--container" save --contai
expect "--into" load --in
expect "freeze" guest fr
expect "--timeout" guest freeze --ti
expect "criu vm" check-kernel x --mode ""
complete -p kata-snapshot >/dev/null || { echo "FAILED: no completion registered"; failed=1; }
dir=$(mktemp -d)
touch "$dir/vm.ksnap"
expect "$dir/vm.ksnap" load "$dir/vm."
rm -rf "$dir"
[ "$failed" -eq 0 ] && echo "bash completion: all cases passed"
exit "$failed"
