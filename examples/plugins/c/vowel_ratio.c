/*
 * A delt scorer plugin in plain C, against plugins/sdk/include/delt_plugin.h.
 *
 * vowel_ratio(text) -> float64: the share of ASCII letters that are vowels (NULL when the text
 * has no letters). Build:
 *   cc -shared -fPIC -O2 -I plugins/sdk/include examples/plugins/c/vowel_ratio.c -o libvowel_ratio.so
 */
#include <stdlib.h>
#include <string.h>
#include <ctype.h>

#include "delt_plugin.h"

static const char MANIFEST[] =
    "{\"name\": \"vowel-ratio\", \"version\": \"0.1.0\", \"functions\": [{"
    "\"name\": \"vowel_ratio\", \"args\": [\"utf8\"], \"returns\": \"float64\", \"options\": {},"
    "\"doc\": \"Share of ASCII letters that are vowels.\"}]}";

static char* message(const char* text) {
  char* copy = malloc(strlen(text) + 1);
  strcpy(copy, text);
  return copy;
}

uint32_t delt_plugin_abi_version(void) { return DELT_PLUGIN_ABI_VERSION; }

const char* delt_plugin_manifest(void) { return MANIFEST; }

void* delt_plugin_create(const char* function, const char* options_json, char** error) {
  if (strcmp(function, "vowel_ratio") != 0) {
    *error = message("no such function");
    return NULL;
  }
  /* No options are declared: anything but an empty object is refused. */
  const char* p = options_json;
  while (isspace((unsigned char)*p)) p++;
  if (*p++ != '{') goto bad;
  while (isspace((unsigned char)*p)) p++;
  if (*p != '}') goto bad;
  return malloc(1); /* no state: any non-NULL handle */
bad:
  *error = message("unknown option: vowel_ratio accepts none");
  return NULL;
}

/* The output array owns one allocation: [validity bitmap][doubles]. */
struct Output {
  const void* buffers[2];
  void* memory;
};

static void release_array(struct ArrowArray* array) {
  struct Output* out = array->private_data;
  free(out->memory);
  free(out);
  array->release = NULL;
}

static void release_schema(struct ArrowSchema* schema) { schema->release = NULL; }

int32_t delt_plugin_score(void* instance, struct ArrowArray* input, struct ArrowSchema* input_schema,
                          struct ArrowArray* output, struct ArrowSchema* output_schema, char** error) {
  (void)instance;
  int32_t status = 0;
  if (input->n_children != 1 || strcmp(input_schema->children[0]->format, "u") != 0) {
    *error = message("vowel_ratio expects one utf8 argument");
    status = 1;
    goto done;
  }
  const struct ArrowArray* text = input->children[0];
  int64_t n = input->length, first = input->offset + text->offset;
  const uint8_t* valid = text->buffers[0];
  const int32_t* offsets = text->buffers[1];
  const char* bytes = text->buffers[2];
  size_t bitmap = (size_t)(n + 7) / 8;
  struct Output* out = malloc(sizeof *out);
  out->memory = calloc(1, bitmap + sizeof(double) * (size_t)n + 8);
  uint8_t* out_valid = out->memory;
  double* values = (double*)((char*)out->memory + ((bitmap + 7) / 8) * 8);
  int64_t nulls = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t row = first + i;
    int present = valid == NULL || (valid[row / 8] >> (row % 8)) & 1;
    int64_t letters = 0, vowels = 0;
    if (present) {
      for (int32_t j = offsets[row]; j < offsets[row + 1]; j++) {
        char c = (char)tolower((unsigned char)bytes[j]);
        if (c >= 'a' && c <= 'z') {
          letters++;
          vowels += strchr("aeiou", c) != NULL;
        }
      }
    }
    if (present && letters > 0) {
      out_valid[i / 8] |= (uint8_t)(1 << (i % 8));
      values[i] = (double)vowels / (double)letters;
    } else {
      nulls++;
      values[i] = 0.0;
    }
  }
  out->buffers[0] = out_valid;
  out->buffers[1] = values;
  *output = (struct ArrowArray){.length = n, .null_count = nulls, .offset = 0, .n_buffers = 2,
                                .n_children = 0, .buffers = out->buffers, .children = NULL,
                                .dictionary = NULL, .release = release_array, .private_data = out};
  *output_schema = (struct ArrowSchema){.format = "g", .name = "", .metadata = NULL,
                                        .flags = ARROW_FLAG_NULLABLE, .n_children = 0, .children = NULL,
                                        .dictionary = NULL, .release = release_schema, .private_data = NULL};
done:
  /* The input is ours: release it. */
  input->release(input);
  input_schema->release(input_schema);
  return status;
}

void delt_plugin_destroy(void* instance) { free(instance); }

void delt_plugin_free_error(char* error) { free(error); }
