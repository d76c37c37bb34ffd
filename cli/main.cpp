#include "cli/run.hpp"

int main(int argc, char** argv) {
  return ks::cli::run(argc, argv);
}
