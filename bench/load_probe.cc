// Where a hot-load's pause goes: the driver calls a pause makes, timed
// alone and around a running kernel, to see what can move out of the pause.
//
//   bazel run -c opt //bench:load_probe            (CUDA_MODULE_LOADING=EAGER
//                                                   or LAZY to compare)
//   load_probe --dump-cubin T --dump-scheduler S    writes a task module's and
//                                                   the scheduler's cubins (no GPU)
//   load_probe --task-source F.cu --dump-cubin T    the task module built from F.cu
//
// Each row is the median (and max) over --repeat rounds, in microseconds:
//   idle/*         module and library calls with no kernel running
//   heap/*         the same after reserving a large allocation (the runtime
//                  reserves its task heap and queues)
//   behind-kernel/* a call issued while a kernel spins, from another thread:
//                  "after exit" is how long it still took once the kernel
//                  was told to stop and had exited; that is what it would
//                  add to a pause if issued before the pause began
//   query-while-blocked  a cuStreamQuery from the main thread while another
//                  thread sits blocked in such a call (does it block too?)
#include <cuda.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "host/cuda_resources.h"
#include "host/device_code.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"

namespace grosr {
namespace {

using Clock = std::chrono::steady_clock;

double Micros(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::micro>(to - from).count();
}

void Check(const CudaDriver& cu, CUresult result, const char* what) {
  if (result != CUDA_SUCCESS) {
    std::fprintf(stderr, "load_probe: %s: %s\n", what, cu.ErrorText(result).c_str());
    std::exit(1);
  }
}

template <typename T>
T Value(absl::StatusOr<T> value, const char* what) {
  if (!value.ok()) {
    std::fprintf(stderr, "load_probe: %s: %s\n", what, std::string(value.status().message()).c_str());
    std::exit(1);
  }
  return std::move(*value);
}

// A task module like the ones users load: two small tasks.
constexpr char kTaskSource[] = R"grosr_src(
#include <grosr/task.h>
struct IndexArgs { unsigned index; unsigned* out; unsigned* hits; };
GROSR_TASK(probe_record, IndexArgs) {
  if (ctx.lane() == 0) {
    args.out[args.index] = args.index * 3u + 7u;
    atomicAdd(&args.hits[args.index], 1u);
  }
}
GROSR_TASK(probe_square, IndexArgs) {
  if (ctx.lane() == 0) args.out[args.index] = args.index * args.index;
}
)grosr_src";

// The same two entry points with no runtime header (no <cuda/atomic>):
// what a module costs without the CCCL globals NVRTC emits for it.
constexpr char kBareSource[] = R"grosr_src(
struct IndexArgs { unsigned index; unsigned* out; unsigned* hits; };
extern "C" __device__ void bare_record(void*, const void* raw) {
  const IndexArgs& args = *static_cast<const IndexArgs*>(raw);
  if ((threadIdx.x & 31) == 0) {
    args.out[args.index] = args.index * 3u + 7u;
    atomicAdd(&args.hits[args.index], 1u);
  }
}
extern "C" __device__ void bare_square(void*, const void* raw) {
  const IndexArgs& args = *static_cast<const IndexArgs*>(raw);
  if ((threadIdx.x & 31) == 0) args.out[args.index] = args.index * args.index;
}
__device__ void (*grosr_task_entry_probe_record)(void*, const void*) = bare_record;
__device__ void (*grosr_task_entry_probe_square)(void*, const void*) = bare_square;
)grosr_src";

constexpr char kSpinSource[] = R"grosr_src(
extern "C" __global__ void spin(volatile unsigned* flag) {
  while (*flag == 0) __nanosleep(1000);
}
)grosr_src";

struct Row {
  explicit Row(std::string n) : name(std::move(n)) {}
  std::string name;
  std::vector<double> us;
};

void Print(const Row& row) {
  std::vector<double> v = row.us;
  std::sort(v.begin(), v.end());
  std::printf("%-44s median %9.1f  max %9.1f  (n=%zu)\n", row.name.c_str(), v[v.size() / 2],
              v.back(), v.size());
}

class Probe {
 public:
  void set_cubin(std::string cubin) { cubin_ = std::move(cubin); }
  Probe(const CudaDriver& cu, std::string cubin, CUfunction spin, uint32_t* flag,
        CUdeviceptr flag_device, CUstream stream)
      : cu_(cu), cubin_(std::move(cubin)), spin_(spin), flag_(flag), flag_device_(flag_device),
        stream_(stream) {}

  // Module load, entry lookup + copy, unload, with nothing running.
  void Idle(const std::string& prefix, int repeat) {
    Row load(prefix + "/cuModuleLoadData"), lookup(prefix + "/2x GetGlobal+DtoH"),
        unload(prefix + "/cuModuleUnload"), lib_load(prefix + "/cuLibraryLoadData"),
        lib_global(prefix + "/cuLibraryGetGlobal (first)"), lib_unload(prefix + "/cuLibraryUnload");
    for (int i = 0; i < repeat; ++i) {
      CUmodule module;
      auto t0 = Clock::now();
      Check(cu_, cu_.cuModuleLoadData(&module, cubin_.data()), "cuModuleLoadData");
      auto t1 = Clock::now();
      for (const char* name : {"grosr_task_entry_probe_record", "grosr_task_entry_probe_square"}) {
        CUdeviceptr symbol;
        size_t bytes;
        uint64_t entry;
        Check(cu_, cu_.cuModuleGetGlobal(&symbol, &bytes, module, name), name);
        Check(cu_, cu_.cuMemcpyDtoH(&entry, symbol, sizeof(entry)), "DtoH");
      }
      auto t2 = Clock::now();
      Check(cu_, cu_.cuModuleUnload(module), "cuModuleUnload");
      auto t3 = Clock::now();
      load.us.push_back(Micros(t0, t1));
      lookup.us.push_back(Micros(t1, t2));
      unload.us.push_back(Micros(t2, t3));

      CUlibrary library;
      t0 = Clock::now();
      Check(cu_, cu_.cuLibraryLoadData(&library, cubin_.data(), nullptr, nullptr, 0, nullptr,
                                       nullptr, 0),
            "cuLibraryLoadData");
      t1 = Clock::now();
      CUdeviceptr symbol;
      size_t bytes;
      Check(cu_, cu_.cuLibraryGetGlobal(&symbol, &bytes, library, "grosr_task_entry_probe_record"),
            "cuLibraryGetGlobal");
      t2 = Clock::now();
      Check(cu_, cu_.cuLibraryUnload(library), "cuLibraryUnload");
      t3 = Clock::now();
      lib_load.us.push_back(Micros(t0, t1));
      lib_global.us.push_back(Micros(t1, t2));
      lib_unload.us.push_back(Micros(t2, t3));
    }
    for (const Row* row : {&load, &lookup, &unload, &lib_load, &lib_global, &lib_unload}) Print(*row);
  }

  // `call` issued from a thread while the spin kernel runs; the kernel is
  // told to stop after `head_start`. Returns {call's time after the kernel
  // exited, worst cuStreamQuery latency on the main thread meanwhile}.
  template <typename Call>
  std::pair<double, double> BehindKernel(Call call, std::chrono::microseconds head_start) {
    *reinterpret_cast<volatile uint32_t*>(flag_) = 0;
    void* params[] = {&flag_device_};
    Check(cu_, cu_.cuLaunchKernel(spin_, 1, 1, 1, 32, 1, 1, 0, stream_, params, nullptr),
          "launch spin");
    while (cu_.cuStreamQuery(stream_) == CUDA_SUCCESS) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // surely running
    std::atomic<bool> done{false};
    Clock::time_point returned;
    CUcontext context = nullptr;
    cu_.cuCtxGetCurrent(&context);
    std::thread caller([&] {
      cu_.cuCtxSetCurrent(context);
      call();
      returned = Clock::now();
      done = true;
    });
    // While the call waits: does a query from this thread still answer?
    double worst_query = 0;
    const auto until = Clock::now() + head_start;
    while (Clock::now() < until) {
      auto q0 = Clock::now();
      (void)cu_.cuStreamQuery(stream_);
      worst_query = std::max(worst_query, Micros(q0, Clock::now()));
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    *reinterpret_cast<volatile uint32_t*>(flag_) = 1;
    CUresult r;
    while ((r = cu_.cuStreamQuery(stream_)) == CUDA_ERROR_NOT_READY) {
    }
    Check(cu_, r, "spin kernel");
    const Clock::time_point exited = Clock::now();
    caller.join();
    return {done && returned > exited ? Micros(exited, returned) : 0.0, worst_query};
  }

  void Behind(int repeat) {
    Row load("behind-kernel/cuModuleLoadData after exit"),
        lib_global("behind-kernel/cuLibraryGetGlobal after exit"),
        unload("behind-kernel/cuModuleUnload after exit"),
        query("behind-kernel/worst cuStreamQuery meanwhile");
    for (int i = 0; i < repeat; ++i) {
      CUmodule module = nullptr;
      auto [after, worst] = BehindKernel(
          [&] { Check(cu_, cu_.cuModuleLoadData(&module, cubin_.data()), "load"); },
          std::chrono::microseconds(5000));
      load.us.push_back(after);
      query.us.push_back(worst);
      // A library loaded while the kernel runs (lazy: returns at once?),
      // its first lookup made behind the kernel.
      CUlibrary library;
      Check(cu_, cu_.cuLibraryLoadData(&library, cubin_.data(), nullptr, nullptr, 0, nullptr,
                                       nullptr, 0),
            "cuLibraryLoadData");
      std::tie(after, worst) = BehindKernel(
          [&] {
            CUdeviceptr symbol;
            size_t bytes;
            Check(cu_, cu_.cuLibraryGetGlobal(&symbol, &bytes, library,
                                              "grosr_task_entry_probe_record"),
                  "cuLibraryGetGlobal");
          },
          std::chrono::microseconds(5000));
      lib_global.us.push_back(after);
      query.us.push_back(worst);
      Check(cu_, cu_.cuLibraryUnload(library), "cuLibraryUnload");
      std::tie(after, worst) = BehindKernel(
          [&] { Check(cu_, cu_.cuModuleUnload(module), "unload"); },
          std::chrono::microseconds(5000));
      unload.us.push_back(after);
      query.us.push_back(worst);
    }
    for (const Row* row : {&load, &lib_global, &unload, &query}) Print(*row);
  }

 private:
  const CudaDriver& cu_;
  std::string cubin_;
  CUfunction spin_;
  uint32_t* flag_;
  CUdeviceptr flag_device_;
  CUstream stream_;
};

int Main(int argc, char** argv) {
  int repeat = 15;
  uint64_t heap_gib = 8;
  std::string dump, dump_scheduler, task_file;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--repeat") (void)absl::SimpleAtoi(argv[i + 1], &repeat);
    if (flag == "--heap-gib") (void)absl::SimpleAtoi(argv[i + 1], &heap_gib);
    if (flag == "--dump-cubin") dump = argv[i + 1];
    if (flag == "--dump-scheduler") dump_scheduler = argv[i + 1];
    if (flag == "--task-source") task_file = argv[i + 1];
  }
  std::string task_source = kTaskSource;
  if (!task_file.empty()) {
    std::ifstream in(task_file);
    if (!in) {
      std::fprintf(stderr, "load_probe: cannot read %s\n", task_file.c_str());
      return 1;
    }
    task_source.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::unique_ptr<Compiler> compiler = Value(Compiler::Create({}), "compiler");
  DeviceCodeTarget target;
  TaskModuleImage task =
      Value(BuildTaskModule(*compiler, target, 255, "probe.cu", task_source), "task module");
  std::printf("task module cubin: %zu bytes\n", task.cubin.size());
  if (!dump.empty() || !dump_scheduler.empty()) {  // for cuobjdump / nvdisasm; no GPU needed
    if (!dump.empty()) std::ofstream(dump, std::ios::binary) << task.cubin;
    if (!dump_scheduler.empty()) {
      SchedulerImage scheduler = Value(BuildSchedulerImage(*compiler, target), "scheduler");
      std::printf("scheduler cubin: %zu bytes, kernel %u registers\n", scheduler.cubin.size(),
                  scheduler.kernel_registers);
      std::ofstream(dump_scheduler, std::ios::binary) << scheduler.cubin;
    }
    return 0;
  }
  const CudaDriver& cu = *Value(CudaDriver::Get(), "driver");
  Check(cu, cu.cuInit(0), "cuInit");
  CUdevice device;
  CUcontext context;
  Check(cu, cu.cuDeviceGet(&device, 0), "cuDeviceGet");
  Check(cu, cu.cuDevicePrimaryCtxRetain(&context, device), "retain");
  Check(cu, cu.cuCtxSetCurrent(context), "cuCtxSetCurrent");
  char name[128];
  cu.cuDeviceGetName(name, sizeof(name), device);
  const char* loading = std::getenv("CUDA_MODULE_LOADING");
  std::printf("%s, CUDA_MODULE_LOADING=%s\n", name, loading != nullptr ? loading : "(default)");

  CompileOptions spin_options;
  spin_options.arch = target.arch;
  LinkedImage spin_image =
      Value(compiler->CompileAndLink("spin.cu", kSpinSource, spin_options), "spin");
  Module spin_module = Value(Module::Load(cu, spin_image.cubin), "spin load");
  CUfunction spin;
  Check(cu, cu.cuModuleGetFunction(&spin, spin_module.get(), "spin"), "spin function");
  PinnedMemory flag = Value(PinnedMemory::Allocate(cu, 64), "flag");
  Stream stream = Value(Stream::Create(cu), "stream");

  Probe probe(cu, task.cubin, spin, static_cast<uint32_t*>(flag.host()), flag.device(),
              stream.get());
  probe.Idle("idle", repeat);
  {
    // Variants: the same task without -lineinfo, and without runtime headers.
    auto idle_variant = [&](const char* label, const char* what, const char* name,
                            const char* source, const CompileOptions& options) {
      LinkedImage image = Value(compiler->CompileAndLink(name, source, options), label);
      std::printf("%s: %zu bytes\n", what, image.cubin.size());
      probe.set_cubin(image.cubin);
      probe.Idle(label, repeat);
    };
    CompileOptions no_lines = DeviceCompileOptions(target);
    no_lines.line_info = false;
    idle_variant("idle-nolineinfo", "task module without -lineinfo", "probe_nolines.cu",
                 kTaskSource, no_lines);
    CompileOptions bare;
    bare.arch = target.arch;
    bare.line_info = false;
    idle_variant("idle-bare", "bare module (no runtime headers)", "bare.cu", kBareSource, bare);
    probe.set_cubin(task.cubin);
  }
  {
    absl::StatusOr<DeviceMemory> heap = DeviceMemory::Allocate(cu, heap_gib << 30);
    std::printf("reserved %llu GiB: %s\n", static_cast<unsigned long long>(heap_gib),
                heap.ok() ? "yes" : std::string(heap.status().message()).c_str());
    probe.Idle("heap", repeat);
    probe.Behind(repeat);
  }
  return 0;
}

}  // namespace
}  // namespace grosr

int main(int argc, char** argv) { return grosr::Main(argc, argv); }
