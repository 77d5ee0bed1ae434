#include "jit/compiler.h"

#include <nvJitLink.h>
#include <nvrtc.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "jit/cuda_driver.h"
#include "jit/include_scanner.h"
#include "jit/sha256.h"

namespace grosr {
namespace {

constexpr char kElfMagic[] = "\x7f" "ELF";

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  std::ostringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

bool IsDirectory(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool IsLtoOption(absl::string_view option) {
  return option == "-dlto" || option == "--dlink-time-opt" ||
         option == "-lto" || absl::StartsWith(option, "-gen-lto") ||
         absl::StartsWith(option, "--gen-lto");
}

absl::Status RejectLto(const std::vector<std::string>& options) {
  for (const std::string& option : options) {
    if (IsLtoOption(option)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "option ", option,
          " is refused: link-time optimised code gives wrong function "
          "addresses when called through pointers from another module"));
    }
  }
  return absl::OkStatus();
}

std::string NvrtcProgramLog(nvrtcProgram program) {
  size_t size = 0;
  if (nvrtcGetProgramLogSize(program, &size) != NVRTC_SUCCESS || size <= 1) {
    return "";
  }
  std::string log(size, '\0');
  if (nvrtcGetProgramLog(program, log.data()) != NVRTC_SUCCESS) return "";
  log.resize(size - 1);  // drop the terminating NUL
  return log;
}

std::string NvJitLinkLog(nvJitLinkHandle handle, bool errors) {
  size_t size = 0;
  nvJitLinkResult result = errors
                               ? nvJitLinkGetErrorLogSize(handle, &size)
                               : nvJitLinkGetInfoLogSize(handle, &size);
  if (result != NVJITLINK_SUCCESS || size <= 1) return "";
  std::string log(size, '\0');
  result = errors ? nvJitLinkGetErrorLog(handle, log.data())
                  : nvJitLinkGetInfoLog(handle, log.data());
  if (result != NVJITLINK_SUCCESS) return "";
  log.resize(size - 1);
  return log;
}

// Owns an nvJitLink handle.
class LinkHandle {
 public:
  LinkHandle() = default;
  LinkHandle(const LinkHandle&) = delete;
  LinkHandle& operator=(const LinkHandle&) = delete;
  ~LinkHandle() {
    if (handle_ != nullptr) nvJitLinkDestroy(&handle_);
  }
  nvJitLinkHandle* out() { return &handle_; }
  nvJitLinkHandle get() const { return handle_; }

 private:
  nvJitLinkHandle handle_ = nullptr;
};

std::string LibraryIdentity(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) return absl::StrCat(path, ":missing");
  return absl::StrCat(path, ":", info.st_size, ":", info.st_mtim.tv_sec, ".",
                      info.st_mtim.tv_nsec);
}

}  // namespace

const std::string& DefaultArchitecture() {
  static const std::string arch = [] {
    absl::StatusOr<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok()) return std::string("sm_90");
    const CudaDriver& cu = **driver;
    CUdevice device;
    int major = 0, minor = 0;
    if (cu.cuInit(0) != CUDA_SUCCESS || cu.cuDeviceGet(&device, 0) != CUDA_SUCCESS ||
        cu.cuDeviceGetAttribute(&major,
                                CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                device) != CUDA_SUCCESS ||
        cu.cuDeviceGetAttribute(&minor,
                                CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                device) != CUDA_SUCCESS) {
      return std::string("sm_90");
    }
    return absl::StrCat("sm_", major, minor);
  }();
  return arch;
}

absl::StatusOr<std::unique_ptr<Compiler>> Compiler::Create(Options options) {
  std::string cuda_home = options.cuda_home;
  if (cuda_home.empty()) {
    const char* env = std::getenv("CUDA_HOME");
    cuda_home = env != nullptr && *env ? env : "/usr/local/cuda";
  }
  std::string version_header =
      absl::StrCat(cuda_home, "/include/cccl/cuda/std/__cccl/version.h");
  absl::StatusOr<std::string> cccl_version = ReadWholeFile(version_header);
  if (!cccl_version.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA toolkit headers not found: ", version_header,
        " is missing (install the CUDA 13 toolkit or set CUDA_HOME)"));
  }
  int nvrtc_major = 0, nvrtc_minor = 0;
  nvrtcVersion(&nvrtc_major, &nvrtc_minor);
  std::string versions = absl::StrCat("nvrtc ", nvrtc_major, ".", nvrtc_minor);
  unsigned int link_major = 0, link_minor = 0;
  if (nvJitLinkVersion(&link_major, &link_minor) == NVJITLINK_SUCCESS) {
    absl::StrAppend(&versions, ", nvJitLink ", link_major, ".", link_minor);
  }
  return std::unique_ptr<Compiler>(new Compiler(std::move(options),
                                                std::move(cuda_home),
                                                std::move(versions),
                                                Sha256Hex(*cccl_version)));
}

Compiler::Compiler(Options options, std::string cuda_home,
                   std::string versions, std::string cccl_identity)
    : options_(std::move(options)),
      cuda_home_(std::move(cuda_home)),
      versions_(std::move(versions)),
      cccl_identity_(std::move(cccl_identity)) {
  if (options_.use_cache) {
    cache_.emplace(options_.cache_dir.empty() ? CompileCache::DefaultDirectory()
                                              : options_.cache_dir);
  }
}

std::string Compiler::cccl_include_dir() const {
  return absl::StrCat(cuda_home_, "/include/cccl");
}

Compiler::Counters Compiler::counters() const {
  Counters counters;
  counters.nvrtc_compiles = nvrtc_compiles_.load();
  counters.nvjitlink_links = nvjitlink_links_.load();
  counters.cache_hits = cache_hits_.load();
  counters.cache_misses = cache_misses_.load();
  return counters;
}

absl::StatusOr<LinkedImage> Compiler::CompileAndLink(const std::string& name,
                                                     const std::string& source,
                                                     const CompileOptions& compile,
                                                     const LinkOptions& link) const {
  absl::StatusOr<CompiledUnit> unit = Compile(name, source, compile);
  if (!unit.ok()) return unit.status();
  LinkOptions options = link;
  if (options.arch.empty()) options.arch = unit->arch;
  return Link({&*unit}, options);
}

absl::StatusOr<CompiledUnit> Compiler::CompileFile(
    const std::string& path, const CompileOptions& options) const {
  absl::StatusOr<std::string> source = ReadWholeFile(path);
  if (!source.ok()) return source.status();
  return Compile(path, *source, options);
}

absl::StatusOr<CompiledUnit> Compiler::Compile(
    const std::string& name, const std::string& source,
    const CompileOptions& options) const {
  if (absl::Status lto = RejectLto(options.extra_options); !lto.ok()) {
    return lto;
  }
  const std::string arch =
      options.arch.empty() ? DefaultArchitecture() : options.arch;

  std::optional<std::string> key;
  if (cache_) {
    // Everything that can change the output goes into the key.
    Sha256 hash;
    hash.UpdateField("grosr-compile-v1");
    hash.UpdateField(versions_);
    hash.UpdateField(cccl_identity_);
    hash.UpdateField(arch);
    hash.UpdateField(name);
    hash.UpdateField(source);
    absl::flat_hash_set<std::string> in_memory;
    for (const InMemoryHeader& header : options.headers) {
      hash.UpdateField(header.name);
      hash.UpdateField(header.text);
      in_memory.insert(header.name);
    }
    for (const std::string& dir : options.include_dirs) hash.UpdateField(dir);
    for (const std::string& define : options.defines) hash.UpdateField(define);
    hash.UpdateField(absl::StrCat(options.max_registers, ":",
                                  options.line_info));
    for (const std::string& option : options.extra_options) {
      hash.UpdateField(option);
    }
    std::vector<std::string> dirs = options.include_dirs;
    for (const IncludedFile& file : FindIncludedFiles(
             source, name, dirs, in_memory)) {
      hash.UpdateField(file.path);
      hash.UpdateField(file.contents);
    }
    key = hash.HexDigest();
    if (std::optional<CompileCache::Entry> hit = cache_->Lookup(*key)) {
      if (absl::StartsWith(hit->payload, kElfMagic)) {
        cache_hits_.fetch_add(1);
        CompiledUnit unit;
        unit.name = name;
        unit.arch = arch;
        unit.cubin = std::move(hit->payload);
        unit.log = std::move(hit->log);
        unit.from_cache = true;
        return unit;
      }
    }
    cache_misses_.fetch_add(1);
  }

  absl::StatusOr<CompiledUnit> unit =
      CompileUncached(name, source, options, arch);
  if (unit.ok() && key) {
    // A cache that cannot be written only costs speed.
    cache_->Store(*key, {unit->cubin, unit->log}).IgnoreError();
  }
  return unit;
}

absl::StatusOr<CompiledUnit> Compiler::CompileUncached(
    const std::string& name, const std::string& source,
    const CompileOptions& options, const std::string& arch) const {
  std::vector<const char*> header_texts;
  std::vector<const char*> header_names;
  for (const InMemoryHeader& header : options.headers) {
    header_texts.push_back(header.text.c_str());
    header_names.push_back(header.name.c_str());
  }
  nvrtcProgram program = nullptr;
  nvrtcResult created = nvrtcCreateProgram(
      &program, source.c_str(), name.c_str(),
      static_cast<int>(header_texts.size()), header_texts.data(),
      header_names.data());
  if (created != NVRTC_SUCCESS) {
    return absl::InternalError(absl::StrCat("nvrtcCreateProgram for ", name,
                                            " failed: ",
                                            nvrtcGetErrorString(created)));
  }
  struct ProgramDeleter {
    nvrtcProgram* program;
    ~ProgramDeleter() { nvrtcDestroyProgram(program); }
  } deleter{&program};

  std::vector<std::string> args = {
      absl::StrCat("--gpu-architecture=", arch),
      "--relocatable-device-code=true",
      "-std=c++20",
  };
  if (options.line_info) args.push_back("-lineinfo");
  if (options.max_registers > 0) {
    args.push_back(absl::StrCat("--maxrregcount=", options.max_registers));
  }
  for (const std::string& define : options.defines) {
    args.push_back(absl::StrCat("-D", define));
  }
  for (const std::string& dir : options.include_dirs) {
    args.push_back(absl::StrCat("-I", dir));
  }
  args.push_back(absl::StrCat("-I", cccl_include_dir()));
  args.push_back(absl::StrCat("-I", cuda_home_, "/include"));
  for (const std::string& option : options.extra_options) args.push_back(option);
  std::vector<const char*> arg_pointers;
  for (const std::string& arg : args) arg_pointers.push_back(arg.c_str());

  nvrtc_compiles_.fetch_add(1);
  nvrtcResult compiled = nvrtcCompileProgram(
      program, static_cast<int>(arg_pointers.size()), arg_pointers.data());
  std::string log = NvrtcProgramLog(program);
  if (compiled != NVRTC_SUCCESS) {
    return absl::InvalidArgumentError(
        absl::StrCat("compile of ", name, " failed (",
                     nvrtcGetErrorString(compiled), "):\n", log));
  }
  size_t cubin_size = 0;
  if (nvrtcGetCUBINSize(program, &cubin_size) != NVRTC_SUCCESS ||
      cubin_size == 0) {
    return absl::InternalError(absl::StrCat(
        "NVRTC produced no cubin for ", name, " (is ", arch,
        " a real architecture such as sm_90?)"));
  }
  CompiledUnit unit;
  unit.name = name;
  unit.arch = arch;
  unit.cubin.resize(cubin_size);
  nvrtcGetCUBIN(program, unit.cubin.data());
  unit.log = std::move(log);
  return unit;
}

absl::StatusOr<LinkedImage> Compiler::Link(
    absl::Span<const CompiledUnit* const> units,
    const LinkOptions& options) const {
  if (units.empty()) {
    return absl::InvalidArgumentError("nothing to link: no compiled units");
  }
  if (absl::Status lto = RejectLto(options.extra_options); !lto.ok()) {
    return lto;
  }
  const std::string arch =
      options.arch.empty() ? DefaultArchitecture() : options.arch;
  for (const CompiledUnit* unit : units) {
    if (unit->arch != arch) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot link ", unit->name, " (compiled for ", unit->arch,
          ") into an image for ", arch));
    }
  }
  for (const std::string& library : options.libraries) {
    if (IsDirectory(library) || !ReadWholeFile(library).ok()) {
      return absl::NotFoundError(
          absl::StrCat("device library not found: ", library));
    }
  }

  std::optional<std::string> key;
  if (cache_) {
    Sha256 hash;
    hash.UpdateField("grosr-link-v1");
    hash.UpdateField(versions_);
    hash.UpdateField(arch);
    for (const std::string& library : options.libraries) {
      hash.UpdateField(LibraryIdentity(library));
    }
    for (const std::string& option : options.extra_options) {
      hash.UpdateField(option);
    }
    for (const CompiledUnit* unit : units) {
      hash.UpdateField(unit->name);
      hash.UpdateField(unit->cubin);
    }
    key = hash.HexDigest();
    if (std::optional<CompileCache::Entry> hit = cache_->Lookup(*key)) {
      if (absl::StartsWith(hit->payload, kElfMagic)) {
        cache_hits_.fetch_add(1);
        return LinkedImage{std::move(hit->payload), std::move(hit->log), true};
      }
    }
    cache_misses_.fetch_add(1);
  }

  std::vector<std::string> args = {absl::StrCat("-arch=", arch)};
  for (const std::string& option : options.extra_options) args.push_back(option);
  std::vector<const char*> arg_pointers;
  for (const std::string& arg : args) arg_pointers.push_back(arg.c_str());

  LinkHandle handle;
  nvjitlink_links_.fetch_add(1);
  nvJitLinkResult result = nvJitLinkCreate(
      handle.out(), static_cast<uint32_t>(arg_pointers.size()),
      arg_pointers.data());
  if (result != NVJITLINK_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("nvJitLinkCreate failed (error ", result, ")"));
  }
  auto failure = [&](absl::string_view what) {
    std::string log = NvJitLinkLog(handle.get(), /*errors=*/true);
    return absl::InvalidArgumentError(absl::StrCat(
        what, " failed (nvJitLink error ", result, "):\n", log));
  };
  for (const CompiledUnit* unit : units) {
    result = nvJitLinkAddData(handle.get(), NVJITLINK_INPUT_CUBIN,
                              unit->cubin.data(), unit->cubin.size(),
                              unit->name.c_str());
    if (result != NVJITLINK_SUCCESS) {
      return failure(absl::StrCat("adding ", unit->name, " to the link"));
    }
  }
  for (const std::string& library : options.libraries) {
    result = nvJitLinkAddFile(handle.get(), NVJITLINK_INPUT_LIBRARY,
                              library.c_str());
    if (result != NVJITLINK_SUCCESS) {
      return failure(absl::StrCat("adding library ", library, " to the link"));
    }
  }
  std::vector<std::string> names;
  for (const CompiledUnit* unit : units) names.push_back(unit->name);
  result = nvJitLinkComplete(handle.get());
  if (result != NVJITLINK_SUCCESS) {
    return failure(absl::StrCat("link of ", absl::StrJoin(names, ", ")));
  }
  size_t size = 0;
  if (nvJitLinkGetLinkedCubinSize(handle.get(), &size) != NVJITLINK_SUCCESS ||
      size == 0) {
    return absl::InternalError("nvJitLink produced no cubin");
  }
  LinkedImage image;
  image.cubin.resize(size);
  nvJitLinkGetLinkedCubin(handle.get(), image.cubin.data());
  image.log = NvJitLinkLog(handle.get(), /*errors=*/false);
  if (key) cache_->Store(*key, {image.cubin, image.log}).IgnoreError();
  return image;
}

}  // namespace grosr
