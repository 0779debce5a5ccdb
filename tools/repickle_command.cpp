// `picklewire repickle IN OUT [--protocol N] [--oob-dir DIR] [--buffer BUF]...`: load a pickle
// (with its out-of-band buffers, in order) and write it back with the C++ pickler at protocol N
// (default 5). With --oob-dir every buffer goes out-of-band into DIR/0.bin, DIR/1.bin, ... in
// buffer-callback order; without it, buffers are written in-band. Malformed input: main() prints
// "UnpicklingError: <what> at offset N" and exits 1.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "picklewire/errors.hpp"
#include "picklewire/pickler.hpp"
#include "picklewire/unpickler.hpp"

namespace picklewire::cli {
namespace {

void write_whole_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error("cannot write " + path.string());
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw Error("cannot write " + path.string());
}

}  // namespace

void add_repickle_command(CLI::App& app) {
  struct Args {
    std::string in, out, oob_dir;
    std::vector<std::string> buffers;
    int protocol = 5;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("repickle", "Load a pickle and write it back with the C++ pickler");
  cmd->add_option("IN", args->in, "pickle file to read")->required();
  cmd->add_option("OUT", args->out, "pickle file to write")->required();
  cmd->add_option("--protocol", args->protocol, "protocol to write (2..5)")->check(CLI::Range(2, 5));
  cmd->add_option("--oob-dir", args->oob_dir, "write every buffer out-of-band as DIR/0.bin, DIR/1.bin, ...");
  cmd->add_option("--buffer", args->buffers, "out-of-band buffer file of IN, in NEXT_BUFFER order (repeatable)");
  cmd->callback([args] {
    Buffer stream = read_file_buffer(args->in);
    std::vector<Buffer> buffers;
    for (const std::string& b : args->buffers) buffers.push_back(read_file_buffer(b));
    Value v = load(stream, buffers);

    PicklerOptions options;
    options.protocol = args->protocol;
    std::vector<Buffer> out_of_band;
    if (!args->oob_dir.empty()) {
      if (args->protocol < 5) throw PicklingError("--oob-dir needs protocol 5 (out-of-band buffers)");
      std::filesystem::create_directories(args->oob_dir);
      options.buffer_callback = [&out_of_band](const Buffer& b, const BufferInfo&) {
        out_of_band.push_back(b);
        return BufferPlacement::out_of_band;
      };
    }
    // The stream goes to OUT in pieces as the pickler completes them: it is never held whole, so
    // a large one costs no fresh memory (page faults) and no separate copy at the end. A failed
    // dump leaves no partial OUT behind.
    std::ofstream out(args->out, std::ios::binary | std::ios::trunc);
    if (!out) throw Error("cannot write " + args->out);
    try {
      dump_to(
          v,
          [&](const void* data, std::size_t size) {
            if (!out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size)))
              throw Error("cannot write " + args->out);
          },
          options);
      out.close();
      if (!out) throw Error("cannot write " + args->out);
    } catch (...) {
      out.close();
      std::error_code ec;
      std::filesystem::remove(args->out, ec);
      throw;
    }
    for (std::size_t i = 0; i < out_of_band.size(); ++i)
      write_whole_file(std::filesystem::path(args->oob_dir) / (std::to_string(i) + ".bin"), out_of_band[i].chars());
  });
}

}  // namespace picklewire::cli
