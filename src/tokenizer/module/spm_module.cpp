// libllava_sentencepiece.so: the only code linked against libsentencepiece (see spm_module.h for why).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <memory>
#include <unordered_map>

#include "../spm_module.h"

namespace {

class SentencePieceModel : public llava::spm::Model {
 public:
  bool load(const std::string& proto, std::string* error) {
    auto status = sp_.LoadFromSerializedProto(proto);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  void encode(const std::string& text, std::vector<int>* ids) const override { sp_.Encode(text, ids); }
  std::string id_to_piece(int id) const override { return sp_.IdToPiece(id); }
  int piece_to_id(const std::string& piece) const override { return sp_.PieceToId(piece); }
  int piece_size() const override { return sp_.GetPieceSize(); }
  std::string decode_pieces(const std::vector<std::string>& pieces) const override {
    std::string text;
    if (!sp_.Decode(pieces, &text).ok()) text.clear();  // fails only on an unloaded model
    return text;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

llava::spm::Model* load(const std::string& proto, std::string* error) {
  auto model = std::make_unique<SentencePieceModel>();
  if (!model->load(proto, error)) return nullptr;
  return model.release();
}

bool train(const std::vector<std::pair<std::string, std::string>>& args, std::string* error) {
  std::unordered_map<std::string, std::string> kwargs(args.begin(), args.end());
  auto status = sentencepiece::SentencePieceTrainer::Train(kwargs);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

const llava::spm::ModuleApi kApi = {llava::spm::kAbiVersion, &load, &train};

}  // namespace

extern "C" __attribute__((visibility("default"))) const llava::spm::ModuleApi* llava_spm_module_api() { return &kApi; }
