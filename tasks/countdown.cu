// A chain of dependent steps that never leaves its warp: each step runs the
// next with ctx.then(), which is GROSR's fastest dependent dispatch.
//   grosr run countdown u32=100000 out:u32:1     -> out[0] = 100000
#include <grosr/task.h>

struct CountdownArgs {
  unsigned left;    // steps still to run
  unsigned* steps;  // counts the steps that ran
};

GROSR_TASK(countdown, CountdownArgs) {
  if (ctx.lane() == 0) *args.steps += 1;
  if (args.left > 1) ctx.then(ctx.self(), CountdownArgs{args.left - 1, args.steps});
}
