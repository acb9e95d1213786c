#include "sample_json.h"

#include <simdjson.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "llava/base64.h"
#include "llava/error.h"
#include "llava/text_util.h"

namespace llava::sample_json {
namespace {

namespace od = simdjson::ondemand;
namespace fs = std::filesystem;
using simdjson::error_code;
using simdjson::SUCCESS;
using Type = od::json_type;

// One parser per thread: the loader's workers read samples concurrently; a parser keeps its buffers
// (sized by the largest sample it has read) for the next sample.
od::parser& thread_parser() {
  thread_local od::parser parser;
  return parser;
}

// simdjson_result<T> -> T (its get() takes rvalues only).
template <typename T, typename R>
error_code take(R&& result, T& out) {
  if (result.error()) return result.error();
  out = std::forward<R>(result).value_unsafe();
  return SUCCESS;
}

// ---- the index's read: everything validated, only id, image entries and word counts kept

error_code validate(od::value v);

error_code validate_array(od::array a) {
  for (auto element : a) {
    od::value v;
    SIMDJSON_TRY(take(element, v));
    SIMDJSON_TRY(validate(v));
  }
  return SUCCESS;
}

error_code validate_object(od::object o) {
  for (auto field : o) {
    std::string_view key;
    SIMDJSON_TRY(field.unescaped_key().get(key));
    od::value v;
    SIMDJSON_TRY(take(field.value(), v));
    SIMDJSON_TRY(validate(v));
  }
  return SUCCESS;
}

// Touches every part of the value, so that invalid JSON anywhere in a sample is found when indexing (On-Demand
// only checks what is read).
error_code validate(od::value v) {
  Type t;
  SIMDJSON_TRY(v.type().get(t));
  switch (t) {
    case Type::array: {
      od::array a;
      SIMDJSON_TRY(v.get_array().get(a));
      return validate_array(a);
    }
    case Type::object: {
      od::object o;
      SIMDJSON_TRY(v.get_object().get(o));
      return validate_object(o);
    }
    case Type::number: {
      double d;
      return v.get_double().get(d);
    }
    case Type::string: {
      std::string_view s;
      return v.get_string().get(s);
    }
    case Type::boolean: {
      bool b;
      return v.get_bool().get(b);
    }
    case Type::null: {
      bool is_null;
      SIMDJSON_TRY(v.is_null().get(is_null));
      return is_null ? SUCCESS : simdjson::N_ATOM_ERROR;
    }
  }
  return simdjson::TAPE_ERROR;
}

// Words of all turns: each turn object's (last) `value` when it is a string, as LLaVA's
// sum(len(conv["value"].split()) for conv in sample["conversations"]).
error_code conversation_words(od::value v, int& words) {
  words = 0;
  Type t;
  SIMDJSON_TRY(v.type().get(t));
  if (t != Type::array) return validate(v);
  od::array turns;
  SIMDJSON_TRY(v.get_array().get(turns));
  for (auto element : turns) {
    od::value turn;
    SIMDJSON_TRY(take(element, turn));
    SIMDJSON_TRY(turn.type().get(t));
    if (t != Type::object) {
      SIMDJSON_TRY(validate(turn));
      continue;
    }
    od::object o;
    SIMDJSON_TRY(turn.get_object().get(o));
    int turn_words = 0;
    for (auto field : o) {
      std::string_view key;
      SIMDJSON_TRY(field.unescaped_key().get(key));
      od::value x;
      SIMDJSON_TRY(take(field.value(), x));
      if (key == "value") {
        turn_words = 0;
        SIMDJSON_TRY(x.type().get(t));
        if (t == Type::string) {
          std::string_view text;
          SIMDJSON_TRY(x.get_string().get(text));
          turn_words = python_word_count(text);
          continue;
        }
      }
      SIMDJSON_TRY(validate(x));
    }
    words += turn_words;
  }
  return SUCCESS;
}

// `image` / `images`: null names nothing, a list names its elements, anything else one image.
error_code image_entries(od::value v, bool& named, int32_t& count) {
  Type t;
  SIMDJSON_TRY(v.type().get(t));
  named = t != Type::null;
  count = t == Type::null ? 0 : 1;
  if (t != Type::array) return validate(v);
  od::array a;
  SIMDJSON_TRY(v.get_array().get(a));
  count = 0;
  for (auto element : a) {
    od::value e;
    SIMDJSON_TRY(take(element, e));
    SIMDJSON_TRY(validate(e));
    ++count;
  }
  return SUCCESS;
}

// A non-string id as nlohmann writes it (7, 7.0, true, [1,2]: what the nlohmann index gave).
error_code id_text(od::value v, std::string& id) {
  Type t;
  SIMDJSON_TRY(v.type().get(t));
  std::string_view raw;
  if (t == Type::object) {
    od::object o;
    SIMDJSON_TRY(v.get_object().get(o));
    SIMDJSON_TRY(o.raw_json().get(raw));
  } else if (t == Type::array) {
    od::array a;
    SIMDJSON_TRY(v.get_array().get(a));
    SIMDJSON_TRY(a.raw_json().get(raw));
  } else {
    raw = v.raw_json_token();
    SIMDJSON_TRY(validate(v));
  }
  try {
    id = nlohmann::json::parse(raw.begin(), raw.end()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const nlohmann::json::exception&) {
    return simdjson::TAPE_ERROR;  // nlohmann's verdict on the whole sample follows
  }
  return SUCCESS;
}

// The root must have been read completely: anything after it is trailing content.
error_code finished(od::document& doc) {
  const char* at = nullptr;
  error_code e = doc.current_location().get(at);
  return e == simdjson::OUT_OF_BOUNDS ? SUCCESS : e ? e : simdjson::TRAILING_CONTENT;
}

error_code validate_scalar_root(od::document& doc, Type t) {
  switch (t) {
    case Type::number: {
      double d;
      return doc.get_double().get(d);
    }
    case Type::string: {
      std::string_view s;
      return doc.get_string().get(s);
    }
    case Type::boolean: {
      bool b;
      return doc.get_bool().get(b);
    }
    default: {
      bool is_null;
      SIMDJSON_TRY(doc.is_null().get(is_null));
      return is_null ? SUCCESS : simdjson::N_ATOM_ERROR;
    }
  }
}

error_code fast_stats(const char* json, size_t size, size_t readable, Stats& stats) {
  od::document doc;
  SIMDJSON_TRY(thread_parser().iterate(json, size, readable).get(doc));
  Type t;
  SIMDJSON_TRY(doc.type().get(t));
  stats = Stats{};
  if (t != Type::object) {  // not a sample (sample() says so); one word, text-only, as the nlohmann index
    stats.modality_length = -1;
    if (t == Type::array) {
      od::array a;
      SIMDJSON_TRY(doc.get_array().get(a));
      SIMDJSON_TRY(validate_array(a));
    } else {
      SIMDJSON_TRY(validate_scalar_root(doc, t));
    }
    return finished(doc);
  }
  od::object sample;
  SIMDJSON_TRY(doc.get_object().get(sample));
  // A key given twice counts once, with its last value (nlohmann's objects keep the last one).
  int words = 0;
  bool named[2] = {false, false};
  int32_t count[2] = {0, 0};
  for (auto field : sample) {
    std::string_view key;
    SIMDJSON_TRY(field.unescaped_key().get(key));
    od::value v;
    SIMDJSON_TRY(take(field.value(), v));
    if (key == "id") {
      SIMDJSON_TRY(v.type().get(t));
      if (t == Type::string) {
        std::string_view s;
        SIMDJSON_TRY(v.get_string().get(s));
        stats.id.assign(s);
      } else {
        SIMDJSON_TRY(id_text(v, stats.id));
      }
    } else if (key == "conversations") {
      SIMDJSON_TRY(conversation_words(v, words));
    } else if (key == "image" || key == "images") {
      const int k = key == "image" ? 0 : 1;
      SIMDJSON_TRY(image_entries(v, named[k], count[k]));
    } else {
      SIMDJSON_TRY(validate(v));
    }
  }
  SIMDJSON_TRY(finished(doc));
  words = std::max(words, 1);  // LengthGroupedSampler forbids 0
  stats.modality_length = named[0] || named[1] ? words : -words;
  stats.image_count = count[0] + count[1];
  return SUCCESS;
}

// The same values from an nlohmann tree: the reference the fast read reproduces, used for the rare sample
// that simdjson rejects and nlohmann reads.
Stats stats_from_json(const nlohmann::json& j) {
  Stats s;
  s.modality_length = -1;
  if (!j.is_object()) return s;
  if (j.contains("id"))
    s.id = j["id"].is_string() ? j["id"].get<std::string>()
                               : j["id"].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  int words = 0;
  bool images = false;
  for (const char* key : {"image", "images"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    images = true;
    s.image_count += j[key].is_array() ? static_cast<int32_t>(j[key].size()) : 1;
  }
  if (j.contains("conversations") && j["conversations"].is_array())
    for (const auto& turn : j["conversations"])
      if (turn.is_object() && turn.contains("value") && turn["value"].is_string())
        words += python_word_count(turn["value"].get_ref<const std::string&>());
  words = std::max(words, 1);
  s.modality_length = images ? words : -words;
  return s;
}

// ---- the loader's read: turns and images with the checks (and messages) of dataset.h

std::string role_of(std::string_view from) {
  if (from == "human" || from == "user") return "human";
  if (from == "gpt" || from == "assistant") return "gpt";
  return "";
}

const char* type_name(Type t) {  // nlohmann's type_name(), which the messages always used
  switch (t) {
    case Type::array: return "array";
    case Type::object: return "object";
    case Type::number: return "number";
    case Type::string: return "string";
    case Type::boolean: return "boolean";
    case Type::null: return "null";
  }
  return "value";
}

// Reads one sample with llava::Error for what is wrong with its shape. simdjson errors cannot happen for a
// sample the index accepted, except for one only nlohmann reads (nested deeper than simdjson's 1024
// levels): the error says so.
class SampleReader {
 public:
  SampleReader(std::string ctx, const std::string& image_folder) : ctx_(std::move(ctx)), folder_(image_folder) {}

  void check(error_code e) const {
    if (e) throw Error(ctx_ + ": invalid JSON: " + simdjson::error_message(e));
  }

  // What one key gave; a key given twice counts with its last value (as in nlohmann's objects), and the
  // first problem found is reported in the order conversations, image, images (the nlohmann reader's).
  struct Turns {
    bool present = false;
    std::string error;
    std::vector<Turn> turns;
  };
  struct Images {
    std::string error;
    std::vector<ImageRef> refs;
  };

  Turns read_turns(od::value v) const {
    Turns out;
    out.present = true;
    Type t;
    check(v.type().get(t));
    if (t != Type::array) {
      out.error = ctx_ + ": 'conversations' must be a list";
      return out;
    }
    od::array turns;
    check(v.get_array().get(turns));
    size_t k = 0;
    for (auto element : turns) {
      od::value turn;
      check(take(element, turn));
      out.error = read_turn(turn, ctx_ + ": conversations[" + std::to_string(k++) + "]", out.turns);
      if (!out.error.empty()) return out;
    }
    return out;
  }

  // `image` (paths) or `images` (base64, data: URLs or paths): a string or a list of strings.
  Images read_images(od::value v, const std::string& key) const {
    Images out;
    Type t;
    check(v.type().get(t));
    if (t == Type::null) return out;
    if (t == Type::string) {
      out.error = add_image(v, key, key == "images", out.refs);
      return out;
    }
    if (t != Type::array) {
      out.error = ctx_ + ": '" + key + "' must be a string or a list of strings";
      return out;
    }
    od::array a;
    check(v.get_array().get(a));
    size_t k = 0;
    for (auto element : a) {
      od::value e;
      check(take(element, e));
      const std::string where = key + "[" + std::to_string(k++) + "]";
      check(e.type().get(t));
      out.error = t == Type::string ? add_image(e, where, key == "images", out.refs)
                                    : ctx_ + ": " + where + " must be a string";
      if (!out.error.empty()) return out;
    }
    return out;
  }

 private:
  struct Text {  // a string field of a turn: absent, not a string, or its text
    bool present = false, is_string = false;
    std::string text;
  };

  Text read_text(od::value v) const {
    Text out;
    out.present = true;
    Type t;
    check(v.type().get(t));
    if (t != Type::string) return out;
    std::string_view s;
    check(v.get_string().get(s));
    out.is_string = true;
    out.text.assign(s);
    return out;
  }

  // Roles human|user and gpt|assistant; leading non-human turns dropped as LLaVA does.
  std::string read_turn(od::value turn, const std::string& where, std::vector<Turn>& turns) const {
    Type t;
    check(turn.type().get(t));
    if (t != Type::object) return where + " must be an object with 'from' and 'value'";
    od::object o;
    check(turn.get_object().get(o));
    Text from, value;
    for (auto field : o) {
      std::string_view key;
      check(field.unescaped_key().get(key));
      if (key != "from" && key != "value") continue;
      const bool is_from = key == "from";
      od::value x;
      check(take(field.value(), x));
      (is_from ? from : value) = read_text(x);
    }
    if (!from.is_string) return where + ": missing 'from'";
    if (!value.is_string) return where + ": 'value' must be a string";
    const std::string role = role_of(from.text);
    if (role.empty()) return where + ": unknown role '" + from.text + "' (expected human|user|gpt|assistant)";
    if (turns.empty() && role != "human") return "";
    const bool human = role == "human";
    if (human != (turns.size() % 2 == 0))
      return where + ": wrong role order: turns must alternate human, gpt, human, ... (got '" + from.text +
             "' at position " + std::to_string(turns.size()) + ")";
    turns.push_back({human, std::move(value.text)});
    return "";
  }

  std::string add_path(const std::string& p, const std::string& where, std::vector<ImageRef>& refs) const {
    if (p.empty()) return ctx_ + ": " + where + " is an empty path";
    fs::path path(p);
    if (path.is_relative() && !folder_.empty()) path = fs::path(folder_) / path;
    refs.push_back({ImageRef::Kind::kPath, path.string(), where, {}});
    return "";
  }

  // A string that decodes as base64 (or is a data: URL) into image bytes is an inline image, else a path.
  // The base64 is decoded from the file's bytes themselves; only a string with JSON escapes (\/, \n) is
  // unescaped first (into the parser's buffer).
  std::string add_image(od::value v, const std::string& where, bool base64_allowed, std::vector<ImageRef>& refs) const {
    std::string_view token = v.raw_json_token();  // "..." and the spaces after it
    std::string_view text = token.substr(1, token.rfind('"') - 1);
    if (text.find('\\') != std::string_view::npos) check(v.get_string().get(text));
    if (!base64_allowed) return add_path(std::string(text), where, refs);
    ImageRef ref{ImageRef::Kind::kInline, "", where, {}};
    if (base64_decode(text, ref.bytes) && looks_like_image(ref.bytes.data(), ref.bytes.size())) {
      refs.push_back(std::move(ref));
      return "";
    }
    if (text.rfind("data:", 0) == 0) return ctx_ + ": " + where + ": data: URL is not base64 image data";
    return add_path(std::string(text), where, refs);
  }

  std::string ctx_;
  const std::string& folder_;
};

}  // namespace

bool index_stats(const char* json, size_t size, size_t readable, Stats& stats, Invalid& invalid) {
  if (fast_stats(json, size, readable, stats) == SUCCESS) return true;
  // simdjson said no: nlohmann's verdict decides, with the messages (and values) the index always had.
  try {
    stats = stats_from_json(nlohmann::json::parse(json, json + size));
    return true;
  } catch (const nlohmann::json::parse_error& e) {
    invalid.offset = e.byte > 0 ? e.byte - 1 : 0;
    invalid.reason = e.what();
  } catch (const nlohmann::json::exception& e) {
    invalid.offset = 0;
    invalid.reason = e.what();
  }
  return false;
}

Sample parse_sample(const char* json, size_t size, size_t readable, int64_t index, const std::string& id,
                    const std::string& image_folder, bool allow_unanswered) {
  const std::string ctx = sample_context(static_cast<long>(index), id);
  SampleReader reader(ctx, image_folder);
  od::document doc;
  reader.check(thread_parser().iterate(json, size, readable).get(doc));
  Type t;
  reader.check(doc.type().get(t));
  if (t != Type::object) throw Error(ctx + ": a sample must be a JSON object, got " + std::string(type_name(t)));
  od::object o;
  reader.check(doc.get_object().get(o));
  SampleReader::Turns turns;
  SampleReader::Images images[2];  // `image`, `images`
  for (auto field : o) {
    std::string_view key;
    reader.check(field.unescaped_key().get(key));
    const bool is_conv = key == "conversations", is_image = key == "image", is_images = key == "images";
    // LLaVA-NeXT's video samples (frames of sample["video"] from --video_folder): not built yet.
    if (key == "video")
      throw Error(ctx + ": a 'video' sample: video samples are not supported yet (--video_folder and "
                  "--frames_upbound are accepted, image and text samples train)");
    if (!is_conv && !is_image && !is_images) continue;
    od::value v;
    reader.check(take(field.value(), v));
    if (is_conv) turns = reader.read_turns(v);
    else images[is_images ? 1 : 0] = reader.read_images(v, is_image ? "image" : "images");
  }
  if (!turns.present) throw Error(ctx + ": no 'conversations'");
  if (!turns.error.empty()) throw Error(turns.error);
  if (turns.turns.empty()) throw Error(ctx + ": empty conversation (no human turn)");
  if (turns.turns.size() < 2 && !allow_unanswered) throw Error(ctx + ": the conversation has no answer (a single human turn)");
  for (const auto& im : images)
    if (!im.error.empty()) throw Error(im.error);
  Sample s;
  s.index = index;
  s.id = id;
  s.turns = std::move(turns.turns);
  s.images = std::move(images[0].refs);
  for (auto& ref : images[1].refs) s.images.push_back(std::move(ref));
  return s;
}

}  // namespace llava::sample_json
