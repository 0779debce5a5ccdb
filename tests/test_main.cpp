// main() of every unit-test binary: the tests, or the child role named by PICKLEWIRE_TEST_ROLE
// (child_role.hpp) when a test started this binary as a peer process.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "child_role.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* role = std::getenv(picklewire::test::kRoleVariable);
  if (!role) return RUN_ALL_TESTS();
  auto it = picklewire::test::roles().find(role);
  if (it == picklewire::test::roles().end()) {
    std::fprintf(stderr, "no child role '%s' in this test binary\n", role);
    return 2;
  }
  try {
    it->second();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child role %s: %s\n", role, e.what());
    return 1;
  }
  return ::testing::UnitTest::GetInstance()->ad_hoc_test_result().Failed() ? 1 : 0;
}
