#include "llava/dataset.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "llava/base64.h"
#include "llava/error.h"
#include "llava/text_util.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

std::string id_of(const json& j) {
  if (!j.is_object() || !j.contains("id")) return "?";
  const json& id = j["id"];
  return id.is_string() ? id.get<std::string>() : id.dump();
}

std::string role_of(const std::string& from) {
  if (from == "human" || from == "user") return "human";
  if (from == "gpt" || from == "assistant") return "gpt";
  return "";
}

}  // namespace

bool looks_like_image(const uint8_t* d, size_t n) {
  auto starts = [&](const char* magic, size_t len) { return n >= len && std::memcmp(d, magic, len) == 0; };
  return starts("\xFF\xD8\xFF", 3) || starts("\x89PNG", 4) || starts("GIF8", 4) || starts("BM", 2) ||
         (starts("RIFF", 4) && n >= 12 && std::memcmp(d + 8, "WEBP", 4) == 0) || starts("P6", 2) ||
         starts("P5", 2) || starts("8BPS", 4) || starts("#?RADIANCE", 10) || starts("II*\0", 4) ||
         starts("MM\0*", 4) || starts("II+\0", 4) || starts("MM\0+", 4);  // TIFF, BigTIFF
}

Dataset Dataset::open(const std::string& json_path, const std::string& image_folder) {
  std::ifstream in(json_path, std::ios::binary);
  if (!in) throw Error(json_path + ": cannot open data file");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_text(ss.str(), image_folder, json_path);
}

Dataset Dataset::from_text(std::string text, const std::string& image_folder, const std::string& name) {
  Dataset d;
  d.text_ = std::make_shared<const std::string>(std::move(text));
  d.path_ = name;
  d.image_folder_ = image_folder;
  d.build_index();
  return d;
}

// Finds each top-level element's byte range with a small scanner (strings, escapes, nesting), then
// parses each element once for its id and modality length. Nothing of the parse is kept, so a
// dataset of a million samples costs its text plus a few words per sample.
void Dataset::build_index() {
  const std::string& t = *text_;
  auto fail = [&](size_t at, const std::string& why) {
    throw Error(path_ + ": invalid JSON at " + line_column(t, at) + ": " + why);
  };
  size_t i = 0;
  while (i < t.size() && is_ws(t[i])) ++i;
  if (i == t.size() || t[i] != '[')
    fail(i, "the data file must be a JSON array of samples (LLaVA's list format)");
  ++i;
  while (true) {
    while (i < t.size() && is_ws(t[i])) ++i;
    if (i == t.size()) fail(i, "unexpected end of file inside the array");
    if (t[i] == ']' && index_.empty()) { ++i; break; }
    size_t begin = i;
    int depth = 0;
    bool in_string = false;
    for (; i < t.size(); ++i) {
      char c = t[i];
      if (in_string) {
        if (c == '\\') ++i;
        else if (c == '"') in_string = false;
        continue;
      }
      if (c == '"') in_string = true;
      else if (c == '{' || c == '[') ++depth;
      else if (c == '}' || c == ']') {
        if (depth == 0) break;  // the array's own ']'
        --depth;
      } else if (c == ',' && depth == 0) break;
    }
    if (i >= t.size()) fail(begin, "unexpected end of file inside sample " + std::to_string(index_.size()));
    size_t end = i;
    while (end > begin && is_ws(t[end - 1])) --end;
    Entry e;
    e.begin = begin;
    e.end = end;
    json j;
    try {
      j = json::parse(t.begin() + begin, t.begin() + end);
    } catch (const json::parse_error& err) {
      fail(begin + (err.byte > 0 ? err.byte - 1 : 0), std::string("sample ") + std::to_string(index_.size()) + ": " + err.what());
    }
    e.id = id_of(j);
    int words = 0;
    bool images = false;
    if (j.is_object()) {
      images = (j.contains("image") && !j["image"].is_null()) || (j.contains("images") && !j["images"].is_null());
      for (const char* key : {"image", "images"}) {
        if (!j.contains(key) || j[key].is_null()) continue;
        e.image_count += j[key].is_array() ? static_cast<int32_t>(j[key].size()) : 1;
      }
      if (j.contains("conversations") && j["conversations"].is_array())
        for (const auto& turn : j["conversations"])
          if (turn.is_object() && turn.contains("value") && turn["value"].is_string())
            words += python_word_count(turn["value"].get_ref<const std::string&>());
    }
    words = std::max(words, 1);  // LengthGroupedSampler forbids 0
    e.modality_length = images ? words : -words;
    index_.push_back(std::move(e));
    if (t[i] == ']') { ++i; break; }
    ++i;  // ','
  }
  while (i < t.size() && is_ws(t[i])) ++i;
  if (i != t.size()) fail(i, "unexpected text after the closing ']'");
}

Sample Dataset::sample(size_t i) const {
  const Entry& e = index_.at(i);
  const std::string ctx = sample_context(static_cast<long>(i), e.id);
  json j = json::parse(text_->begin() + e.begin, text_->begin() + e.end);  // valid: checked by the index
  if (!j.is_object()) throw Error(ctx + ": a sample must be a JSON object, got " + std::string(j.type_name()));
  Sample s;
  s.index = static_cast<int64_t>(i);
  s.id = e.id;

  // Conversations: roles human|user and gpt|assistant; leading non-human turns dropped as LLaVA does.
  if (!j.contains("conversations")) throw Error(ctx + ": no 'conversations'");
  const json& conv = j["conversations"];
  if (!conv.is_array()) throw Error(ctx + ": 'conversations' must be a list");
  std::vector<Turn> turns;
  for (size_t k = 0; k < conv.size(); ++k) {
    const json& turn = conv[k];
    std::string where = ctx + ": conversations[" + std::to_string(k) + "]";
    if (!turn.is_object()) throw Error(where + " must be an object with 'from' and 'value'");
    if (!turn.contains("from") || !turn["from"].is_string()) throw Error(where + ": missing 'from'");
    if (!turn.contains("value") || !turn["value"].is_string()) throw Error(where + ": 'value' must be a string");
    std::string role = role_of(turn["from"].get<std::string>());
    if (role.empty())
      throw Error(where + ": unknown role '" + turn["from"].get<std::string>() + "' (expected human|user|gpt|assistant)");
    if (turns.empty() && role != "human") continue;
    bool human = role == "human";
    if (human != (turns.size() % 2 == 0))
      throw Error(where + ": wrong role order: turns must alternate human, gpt, human, ... (got '" +
                  turn["from"].get<std::string>() + "' at position " + std::to_string(turns.size()) + ")");
    turns.push_back({human, turn["value"].get<std::string>()});
  }
  if (turns.empty()) throw Error(ctx + ": empty conversation (no human turn)");
  if (turns.size() < 2 && !allow_unanswered_) throw Error(ctx + ": the conversation has no answer (a single human turn)");
  s.turns = std::move(turns);

  // Images: `image` (path or list of paths), then `images` (list of base64 strings or paths).
  auto add_path = [&](const std::string& p, const std::string& where) {
    if (p.empty()) throw Error(ctx + ": " + where + " is an empty path");
    fs::path path(p);
    if (path.is_relative() && !image_folder_.empty()) path = fs::path(image_folder_) / path;
    s.images.push_back({ImageRef::Kind::kPath, path.string(), where, {}});
  };
  auto list_of_strings = [&](const char* key, auto&& add) {
    if (!j.contains(key) || j[key].is_null()) return;
    const json& v = j[key];
    if (v.is_string()) {
      add(v.get<std::string>(), std::string(key));
    } else if (v.is_array()) {
      for (size_t k = 0; k < v.size(); ++k) {
        std::string where = std::string(key) + "[" + std::to_string(k) + "]";
        if (!v[k].is_string()) throw Error(ctx + ": " + where + " must be a string");
        add(v[k].get<std::string>(), where);
      }
    } else {
      throw Error(ctx + ": '" + key + "' must be a string or a list of strings");
    }
  };
  list_of_strings("image", add_path);
  list_of_strings("images", [&](const std::string& v, const std::string& where) {
    // Text that decodes as base64 (or a data: URL) into image bytes is an inline image; else a path.
    std::vector<uint8_t> bytes;
    if (base64_decode(v, bytes) && looks_like_image(bytes.data(), bytes.size())) {
      s.images.push_back({ImageRef::Kind::kInline, "", where, std::move(bytes)});
      return;
    }
    if (v.rfind("data:", 0) == 0) throw Error(ctx + ": " + where + ": data: URL is not base64 image data");
    add_path(v, where);
  });
  return s;
}

}  // namespace llava
