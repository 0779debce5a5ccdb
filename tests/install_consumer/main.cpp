// Two processes over shared memory through an installed picklewire: the parent binds a channel,
// the child fills an array it borrowed from the segment and sends it; the parent checks every
// element and that nothing was copied. Exit 0 on success.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <picklewire/values.hpp>

int main() {
  using namespace std::chrono_literals;
  const std::string url = "shm://picklewire-consumer-" + std::to_string(::getpid());
  picklewire::EndpointOptions options;
  options.shm.capacity = 16 << 20;
  picklewire::Receiver rx = picklewire::Receiver::bind(url, options);
  const pid_t child = ::fork();
  if (child == 0) {
    picklewire::Sender tx = picklewire::Sender::connect(url);
    picklewire::NDArray a = picklewire::allocate_array(tx, picklewire::DType::of<double>(), {1000, 100});
    double i = 0;
    for (double& x : a.as_mutable<double>()) x = i++;
    picklewire::send_value(tx, picklewire::Value::ndarray(a), 10s);
    ::_exit(tx.stats().ledger.total_copied_bytes() == 0 ? 0 : 3);
  }
  std::optional<picklewire::Value> v = picklewire::recv_value(rx, 20s);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!v || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "consumer: no array, or the sender copied (status %d)\n", status);
    return 1;
  }
  double i = 0;
  for (double x : v->as_ndarray().as<double>())
    if (x != i++) {
      std::fprintf(stderr, "consumer: element %.0f is %f\n", i - 1, x);
      return 1;
    }
  std::printf("consumer: %.0f float64 over %s, 0 bytes copied by the sender\n", i, url.c_str());
  return 0;
}
