/*
 * delt scorer plugin ABI, version 1.
 *
 * A plugin is a shared library exporting the six functions below. Data crosses as the Arrow C
 * Data Interface (https://arrow.apache.org/docs/format/CDataInterface.html); everything else is
 * plain C: NUL-terminated UTF-8 strings and opaque instance pointers.
 *
 * Calls:
 *   delt_plugin_abi_version()  -> DELT_PLUGIN_ABI_VERSION the plugin was built against.
 *   delt_plugin_manifest()     -> JSON describing the plugin, static for the library's lifetime:
 *       {"name": "...", "version": "...", "functions": [
 *          {"name": "...", "args": ["utf8", ...], "returns": "float64",
 *           "options": {"option_name": "one-line doc", ...}, "doc": "one-line doc"}]}
 *     Type names: utf8, large_utf8, utf8_view, text, binary, bool, int32, int64, float32, float64.
 *     utf8_view (Arrow format "vu") passes DataFusion's strings without a copy; utf8 is the
 *     simplest to read from C. text accepts any string or binary column and arrives as
 *     utf8_view; delt checks that binary values are UTF-8 before the call.
 *   delt_plugin_create(function, options_json, &error) -> instance, or NULL and *error set.
 *     options_json is a JSON object; unknown options must be refused.
 *   delt_plugin_score(instance, input, input_schema, output, output_schema, &error) -> 0 on
 *     success. input is a struct array, one child per argument, in the declared types; the
 *     plugin owns it and must call its release callback. On success the plugin fills
 *     output/output_schema with one value per input row (the host then owns them). On failure
 *     it returns non-zero and sets *error.
 *   delt_plugin_destroy(instance) frees an instance.
 *   delt_plugin_free_error(error) frees a message set by create or score.
 * The host calls an instance from one thread at a time; it may keep several instances.
 */
#ifndef DELT_PLUGIN_H
#define DELT_PLUGIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DELT_PLUGIN_ABI_VERSION 1

#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
  const char* format;
  const char* name;
  const char* metadata;
  int64_t flags;
  int64_t n_children;
  struct ArrowSchema** children;
  struct ArrowSchema* dictionary;
  void (*release)(struct ArrowSchema*);
  void* private_data;
};

struct ArrowArray {
  int64_t length;
  int64_t null_count;
  int64_t offset;
  int64_t n_buffers;
  int64_t n_children;
  const void** buffers;
  struct ArrowArray** children;
  struct ArrowArray* dictionary;
  void (*release)(struct ArrowArray*);
  void* private_data;
};

#endif /* ARROW_C_DATA_INTERFACE */

uint32_t delt_plugin_abi_version(void);
const char* delt_plugin_manifest(void);
void* delt_plugin_create(const char* function, const char* options_json, char** error);
int32_t delt_plugin_score(void* instance, struct ArrowArray* input, struct ArrowSchema* input_schema,
                          struct ArrowArray* output, struct ArrowSchema* output_schema, char** error);
void delt_plugin_destroy(void* instance);
void delt_plugin_free_error(char* error);

#ifdef __cplusplus
}
#endif

#endif /* DELT_PLUGIN_H */
