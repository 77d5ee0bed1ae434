#include "host/task_arguments.h"

#include <cstring>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace grosr {
namespace {

template <typename Struct>
Struct Unpack(const std::vector<uint8_t>& bytes) {
  EXPECT_EQ(bytes.size(), sizeof(Struct));
  Struct s{};
  std::memcpy(&s, bytes.data(), std::min(bytes.size(), sizeof(Struct)));
  return s;
}

std::vector<uint8_t> Pack(const std::vector<std::string>& tokens,
                          const std::vector<uint64_t>& buffers = {}) {
  auto arguments = ParseTaskArguments(tokens);
  EXPECT_TRUE(arguments.ok()) << arguments.status();
  auto packed = PackTaskArguments(*arguments, buffers);
  EXPECT_TRUE(packed.ok()) << packed.status();
  return packed.ok() ? *packed : std::vector<uint8_t>{};
}

TEST(TaskArgumentsTest, PacksLikeTheTasksStruct) {
  struct AddArgs {
    int a;
    int b;
    int* out;
  };
  AddArgs add = Unpack<AddArgs>(Pack({"i32=2", "i32=-3", "out:i32:1"}, {0x1000}));
  EXPECT_EQ(add.a, 2);
  EXPECT_EQ(add.b, -3);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(add.out), 0x1000u);

  struct Mixed {
    unsigned u;
    unsigned long long big;
    float f;
    double d;
  };
  Mixed m = Unpack<Mixed>(Pack({"u32=7", "u64=18446744073709551615", "f32=1.5", "f64=-2.25"}));
  EXPECT_EQ(m.u, 7u);
  EXPECT_EQ(m.big, ~0ull);
  EXPECT_EQ(m.f, 1.5f);
  EXPECT_EQ(m.d, -2.25);

  struct Tail {
    unsigned long long x;
    unsigned y;  // padded to 16
  };
  Tail t = Unpack<Tail>(Pack({"u64=1", "u32=2"}));
  EXPECT_EQ(t.y, 2u);
  EXPECT_TRUE(Pack({}).empty());
}

TEST(TaskArgumentsTest, BuffersCarryTheirContents) {
  auto arguments = ParseTaskArguments({"in:u32:1,2,3", "out:f32:2"});
  ASSERT_TRUE(arguments.ok());
  ASSERT_EQ(arguments->size(), 2u);
  const TaskArgument& in = (*arguments)[0];
  EXPECT_EQ(in.kind, TaskArgument::Kind::kInput);
  EXPECT_EQ(in.count, 3u);
  EXPECT_EQ(FormatElements(in.type, in.bytes.data(), in.count), "1, 2, 3");
  const TaskArgument& out = (*arguments)[1];
  EXPECT_EQ(out.kind, TaskArgument::Kind::kOutput);
  EXPECT_EQ(out.bytes, std::vector<uint8_t>(8, 0xff)) << "outputs start poisoned";
  std::vector<uint8_t> many(100 * 4, 0);
  EXPECT_TRUE(absl::EndsWith(FormatElements(ElementType::kU32, many.data(), 100, 3), "0, 0, 0, ..."));
}

TEST(TaskArgumentsTest, BadTokensAreNamed) {
  for (const char* token : {"x=1", "i32=abc", "i32=4294967296", "u32=-1", "out:i32:0",
                            "out:q32:3", "in:u32:1,,2", "out:i32", "noequals"}) {
    auto arguments = ParseTaskArguments({"i32=1", token});
    ASSERT_FALSE(arguments.ok()) << token;
    EXPECT_TRUE(absl::StrContains(arguments.status().message(), token))
        << arguments.status();
  }
  auto too_big = ParseTaskArguments({"u64=1", "u64=2", "u64=3", "u64=4", "u64=5", "u64=6", "u32=7"});
  ASSERT_TRUE(too_big.ok());
  auto packed = PackTaskArguments(*too_big, {});
  EXPECT_FALSE(packed.ok());
  EXPECT_TRUE(absl::StrContains(packed.status().message(), "at most 48"));
}

}  // namespace
}  // namespace grosr
