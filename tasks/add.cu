// Adds two integers and stores the sum: the smallest useful task.
//   grosr run add i32=2 i32=3 out:i32:1     -> out[0] = 5
#include <grosr/task.h>

struct AddArgs {
  int a;
  int b;
  int* out;  // device memory
};

GROSR_TASK(add, AddArgs) {
  if (ctx.lane() == 0) *args.out = args.a + args.b;
}
