// `picklewire repr FILE [--buffer BUF]...`: load a pickle (with its out-of-band buffers, in order)
// and print it as one line of Python (picklewire/repr.hpp). Malformed input: main() prints
// "UnpicklingError: <what> at offset N" and exits 1.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iterator>
#include <string>
#include <fstream>
#include <iostream>
#include <memory>
#include <vector>

#include "commands.hpp"
#include "picklewire/errors.hpp"
#include "picklewire/repr.hpp"
#include "picklewire/unpickler.hpp"

namespace picklewire::cli {

Buffer read_file_buffer(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path);
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    // Mapped, not read: the page cache's pages are used in place, instead of faulting in a fresh
    // buffer and copying the file into it. Private, so a load may treat the bytes as its own (a
    // page it writes is copied then). Prefaulted for reading (MADV_POPULATE_READ maps them in one
    // call): MAP_POPULATE on a writable private mapping would copy every page up front.
    if (int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
      struct stat st {};
      void* p = MAP_FAILED;
      if (::fstat(fd, &st) == 0 && st.st_size > 0) {
        p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) (void)::madvise(p, static_cast<std::size_t>(st.st_size), MADV_POPULATE_READ);  // (else faulted in on reading)
      }
      ::close(fd);
      if (p != MAP_FAILED) {
        auto size = static_cast<std::size_t>(st.st_size);
        return Buffer::with_free_function(p, size, /*readonly=*/false,
                                          [](void* q, void* n) { ::munmap(q, reinterpret_cast<std::size_t>(n)); },
                                          reinterpret_cast<void*>(size));
      }
    }
    auto size = static_cast<std::size_t>(std::filesystem::file_size(path, ec));
    if (ec) throw Error("cannot read " + path);
    Buffer b = Buffer::allocate(size);
    if (size && !in.read(reinterpret_cast<char*>(b.mutable_data()), static_cast<std::streamsize>(size)))
      throw Error("cannot read " + path);
    return b;
  }
  // A pipe or device (e.g. /dev/stdin): its size is unknown until it ends.
  std::string bytes{std::istreambuf_iterator<char>(in), {}};
  if (in.bad()) throw Error("cannot read " + path);
  return Buffer::copy(std::string_view(bytes));
}

void add_repr_command(CLI::App& app) {
  struct Args {
    std::string file;
    std::vector<std::string> buffers;
    std::size_t max_depth = UnpicklerOptions{}.max_depth;
    std::string encoding = UnpicklerOptions{}.encoding;
    // A small pickle with much sharing can expand exponentially when printed (as in Python).
    std::size_t max_chars = std::size_t(256) << 20;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("repr", "Load a pickle and print it as one line of Python");
  cmd->add_option("FILE", args->file, "pickle file")->required();
  cmd->add_option("--buffer", args->buffers, "out-of-band buffer file, in NEXT_BUFFER order (repeatable)");
  cmd->add_option("--max-depth", args->max_depth, "nesting limit (UnpicklerOptions::max_depth)");
  cmd->add_option("--encoding", args->encoding,
                  "Python 2 str decoding: ASCII (default), latin1, utf-8, or bytes (UnpicklerOptions::encoding)");
  cmd->add_option("--max-chars", args->max_chars, "refuse to print more than this many characters (default 256 MiB)");
  cmd->callback([args] {
    Buffer stream = read_file_buffer(args->file);
    std::vector<Buffer> buffers;
    for (const std::string& b : args->buffers) buffers.push_back(read_file_buffer(b));
    UnpicklerOptions options;
    options.max_depth = args->max_depth;
    options.encoding = args->encoding;
    Value v = load(stream, buffers, options);
    std::string line = repr(v, args->max_chars);
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stdout);
  });
}

}  // namespace picklewire::cli
