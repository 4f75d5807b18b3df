#include "bench/messages.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon message benchmark: envelope vs plain CAF"};
  aicon::bench::messages_options opts;
  aicon::bench::add_messages_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_messages(opts, argv[0]);
}
