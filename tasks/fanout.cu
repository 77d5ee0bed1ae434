// A tree of tasks: each node spawns `width` children (one per lane, in one
// warp-aggregated spawn) until `depth` levels exist; every node counts itself.
//   grosr run fanout u32=4 u32=8 out:u64:1     -> out[0] = 1+8+64+512+4096
#include <grosr/task.h>

struct FanoutArgs {
  unsigned depth;            // levels below this node
  unsigned width;            // children per node, at most 32
  unsigned long long* nodes; // counts nodes that ran
};

GROSR_TASK(fanout, FanoutArgs) {
  if (ctx.lane() == 0) atomicAdd(args.nodes, 1ull);
  if (args.depth == 0) return;
  if (ctx.lane() < args.width) {
    FanoutArgs child{args.depth - 1, args.width, args.nodes};
    if (!ctx.spawn(ctx.self(), child)) ctx.fail(1);  // device queue full
  }
}
