#pragma once
// The boundary around libsentencepiece.
//
// Why a separately loaded module: Debian's libsentencepiece.so exports its own bundled protobuf-lite
// 3.14 symbols, and LibTorch loads libprotobuf 3.21. In one global symbol scope the two interpose and
// the process crashes during static initialisation. So libsentencepiece is never linked into the
// program: the module libllava_sentencepiece.so links it and is dlopen'ed with RTLD_LOCAL |
// RTLD_DEEPBIND, which keeps sentencepiece's protobuf symbols to itself. Only this small interface
// (virtual calls, std types) crosses the boundary.
#include <string>
#include <utility>
#include <vector>

namespace llava::spm {

class Model {
 public:
  virtual ~Model() = default;
  virtual void encode(const std::string& text, std::vector<int>* ids) const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  virtual int piece_to_id(const std::string& piece) const = 0;
  virtual int piece_size() const = 0;
  // SentencePieceProcessor::DecodePieces: "▁" -> space, <0xNN> pieces -> bytes (invalid UTF-8 replaced).
  virtual std::string decode_pieces(const std::vector<std::string>& pieces) const = 0;
};

struct ModuleApi {
  int abi_version;
  // Returns nullptr and sets *error on failure.
  Model* (*load)(const std::string& serialized_model, std::string* error);
  bool (*train)(const std::vector<std::pair<std::string, std::string>>& args, std::string* error);
};

constexpr int kAbiVersion = 2;

// The module's API (loaded on first use; throws llava::Error saying where it looked when it is missing).
const ModuleApi& module();

}  // namespace llava::spm

extern "C" const llava::spm::ModuleApi* llava_spm_module_api();
