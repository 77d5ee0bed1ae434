#include "jit/cubin.h"

#include <elf.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace grosr {
namespace {

template <typename T>
bool ReadAt(absl::string_view bytes, uint64_t offset, T* out) {
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T)) return false;
  std::memcpy(out, bytes.data() + offset, sizeof(T));
  return true;
}

// A NUL-terminated string inside a string table.
bool StringAt(absl::string_view bytes, const Elf64_Shdr& table, uint32_t index,
              std::string* out) {
  if (table.sh_offset > bytes.size() ||
      table.sh_size > bytes.size() - table.sh_offset || index >= table.sh_size) {
    return false;
  }
  absl::string_view strings(bytes.data() + table.sh_offset, table.sh_size);
  size_t end = strings.find('\0', index);
  if (end == absl::string_view::npos) return false;
  *out = std::string(strings.substr(index, end - index));
  return true;
}

// .nv.info attribute records: {u8 format, u8 attribute, u16 value-or-size}.
// Format 4 (EIFMT_SVAL) carries `size` bytes; the ones read here hold
// {u32 symbol index, u32 value}. Other formats have no payload.
constexpr uint8_t kFormatSizedValue = 4;
constexpr uint8_t kAttrFrameSize = 0x11;
constexpr uint8_t kAttrMinStackSize = 0x12;
constexpr uint8_t kAttrMaxStackSize = 0x23;
constexpr uint8_t kAttrRegisterCount = 0x2f;

}  // namespace

const FunctionResources* CubinContents::FindFunction(
    absl::string_view name) const {
  for (const FunctionResources& function : functions) {
    if (function.name == name) return &function;
  }
  return nullptr;
}

const CubinSymbol* CubinContents::FindSymbol(absl::string_view name) const {
  for (const CubinSymbol& symbol : symbols) {
    if (symbol.name == name) return &symbol;
  }
  return nullptr;
}

absl::StatusOr<CubinContents> InspectCubin(absl::string_view cubin) {
  auto malformed = [](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("malformed cubin: ", why));
  };
  Elf64_Ehdr header;
  if (!ReadAt(cubin, 0, &header) ||
      std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
    return malformed("no ELF header");
  }
  if (header.e_ident[EI_CLASS] != ELFCLASS64) return malformed("not ELF64");
  if (header.e_shentsize != sizeof(Elf64_Shdr)) {
    return malformed("unexpected section header size");
  }
  std::vector<Elf64_Shdr> sections(header.e_shnum);
  for (size_t i = 0; i < sections.size(); ++i) {
    if (!ReadAt(cubin, header.e_shoff + i * sizeof(Elf64_Shdr), &sections[i])) {
      return malformed("section header out of bounds");
    }
  }
  if (header.e_shstrndx >= sections.size()) {
    return malformed("bad section name table index");
  }
  CubinContents contents;
  for (const Elf64_Shdr& section : sections) {
    std::string name;
    if (!StringAt(cubin, sections[header.e_shstrndx], section.sh_name, &name)) {
      return malformed("bad section name");
    }
    contents.sections.push_back(std::move(name));
  }
  std::vector<std::string> symbol_names;  // by symbol table index
  for (const Elf64_Shdr& table : sections) {
    if (table.sh_type != SHT_SYMTAB) continue;
    if (table.sh_link >= sections.size() ||
        table.sh_entsize != sizeof(Elf64_Sym)) {
      return malformed("bad symbol table");
    }
    const Elf64_Shdr& strings = sections[table.sh_link];
    uint64_t count = table.sh_size / sizeof(Elf64_Sym);
    for (uint64_t i = 0; i < count; ++i) {
      Elf64_Sym symbol;
      if (!ReadAt(cubin, table.sh_offset + i * sizeof(Elf64_Sym), &symbol)) {
        return malformed("symbol out of bounds");
      }
      CubinSymbol entry;
      if (!StringAt(cubin, strings, symbol.st_name, &entry.name)) {
        return malformed("bad symbol name");
      }
      symbol_names.push_back(entry.name);
      if (entry.name.empty()) continue;
      if (symbol.st_shndx != SHN_UNDEF && symbol.st_shndx < sections.size()) {
        entry.section = contents.sections[symbol.st_shndx];
      }
      entry.size = symbol.st_size;
      entry.is_function = ELF64_ST_TYPE(symbol.st_info) == STT_FUNC;
      // Relocatable cubins mark device variables STT_LOPROC (CUDA's own
      // object type); linked ones use STT_OBJECT.
      entry.is_object = ELF64_ST_TYPE(symbol.st_info) == STT_OBJECT ||
                        ELF64_ST_TYPE(symbol.st_info) == STT_LOPROC;
      int binding = ELF64_ST_BIND(symbol.st_info);
      entry.is_global = binding == STB_GLOBAL || binding == STB_WEAK;
      contents.symbols.push_back(std::move(entry));
    }
    break;  // a cubin has one symbol table
  }
  for (size_t i = 0; i < sections.size(); ++i) {
    if (contents.sections[i] != ".nv.info") continue;
    const Elf64_Shdr& info = sections[i];
    if (info.sh_offset > cubin.size() ||
        info.sh_size > cubin.size() - info.sh_offset) {
      return malformed(".nv.info out of bounds");
    }
    absl::string_view records(cubin.data() + info.sh_offset, info.sh_size);
    size_t at = 0;
    while (at + 4 <= records.size()) {
      uint8_t format = static_cast<uint8_t>(records[at]);
      uint8_t attribute = static_cast<uint8_t>(records[at + 1]);
      uint16_t size;
      std::memcpy(&size, records.data() + at + 2, 2);
      at += 4;
      if (format != kFormatSizedValue) continue;
      if (at + size > records.size()) return malformed(".nv.info record");
      if (size == 8 && (attribute == kAttrRegisterCount ||
                        attribute == kAttrFrameSize ||
                        attribute == kAttrMinStackSize ||
                        attribute == kAttrMaxStackSize)) {
        uint32_t index, value;
        std::memcpy(&index, records.data() + at, 4);
        std::memcpy(&value, records.data() + at + 4, 4);
        if (index < symbol_names.size() && !symbol_names[index].empty()) {
          FunctionResources* function = nullptr;
          for (FunctionResources& f : contents.functions) {
            if (f.name == symbol_names[index]) function = &f;
          }
          if (function == nullptr) {
            contents.functions.push_back({symbol_names[index]});
            function = &contents.functions.back();
          }
          switch (attribute) {
            case kAttrRegisterCount: function->registers = value; break;
            case kAttrFrameSize: function->frame_bytes = value; break;
            default: function->stack_bytes = std::max(function->stack_bytes, value);
          }
        }
      }
      at += size;
    }
  }
  return contents;
}

}  // namespace grosr
