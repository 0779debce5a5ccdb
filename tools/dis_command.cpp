// `picklewire dis FILE`: an opcode listing like `python -m pickletools FILE` (picklewire/dis.hpp).
#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "picklewire/dis.hpp"

namespace picklewire::cli {

void add_dis_command(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("dis", "Disassemble a pickle (like python -m pickletools)");
  cmd->add_option("FILE", *file, "pickle file")->required();
  cmd->callback([file] {
    std::string text;
    try {
      dis(read_file_buffer(*file), text);
    } catch (const UnpicklingError&) {
      // pickletools prints the lines it got through before it raises: so do we, then the error.
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      throw;
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
  });
}

}  // namespace picklewire::cli
