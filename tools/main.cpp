// picklewire — inspect, convert, send and receive pickles. See README.md for every subcommand.
#include <CLI/CLI.hpp>

#include <iostream>
#include <string>

#include "commands.hpp"
#include "picklewire/errors.hpp"

int main(int argc, char** argv) {
  CLI::App app{"picklewire: pickle protocol 5 with zero-copy out-of-band buffers"};
  app.set_version_flag("--version", std::string("picklewire ") + PICKLEWIRE_VERSION);
  app.require_subcommand(1);
  picklewire::cli::add_repr_command(app);
  picklewire::cli::add_dis_command(app);
  picklewire::cli::add_repickle_command(app);
  picklewire::cli::add_send_command(app);
  picklewire::cli::add_recv_command(app);
  picklewire::cli::add_bench_command(app);
  picklewire::cli::add_shm_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints what was wrong and the usage hint
    return picklewire::cli::kUsageError;
  } catch (const picklewire::cli::UsageError& e) {
    std::cerr << "picklewire: " << e.what() << "\nRun with --help for more information.\n";
    return picklewire::cli::kUsageError;
  } catch (const picklewire::UnpicklingError& e) {
    std::cerr << "UnpicklingError: " << e.what() << "\n";
    return picklewire::cli::kFailure;
  } catch (const std::exception& e) {
    std::cerr << "picklewire: " << e.what() << "\n";
    return picklewire::cli::kFailure;
  }
  return 0;
}
