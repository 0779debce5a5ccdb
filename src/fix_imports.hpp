// src/fix_imports.hpp — how a reader of a protocol 0-2 stream renames Python 2 globals to their
// Python 3 homes, as CPython's Unpickler(fix_imports=True) does (Lib/_compat_pickle.py's
// NAME_MAPPING, then IMPORT_MAPPING; tables generated into unpickler_compat.inc). The unpickler
// applies it; the pickler uses it to refuse a global that such a reader would take for another.
#pragma once

#include <string_view>
#include <utility>

namespace picklewire::fix_imports {

struct CompatName {
  std::string_view module, name, new_module, new_name;
};
struct CompatModule {
  std::string_view module, new_module;
};
#include "unpickler_compat.inc"

// The (module, name) a protocol < 3 reader looks up for the global written as `module`.`name`.
inline std::pair<std::string_view, std::string_view> python3_name(std::string_view module, std::string_view name) {
  for (const CompatName& c : kCompatNames)
    if (c.module == module && c.name == name) return {c.new_module, c.new_name};
  for (const CompatModule& c : kCompatModules)
    if (c.module == module) return {c.new_module, name};
  return {module, name};
}

}  // namespace picklewire::fix_imports
