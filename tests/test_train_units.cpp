// The trainer's small components: schedules against transformers' closed forms, Python-style number
// formatting and the tqdm bar, AdamW against torch's, checkpoint directories, LoRA (adapter, dropout, merge,
// gradient checkpointing).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/options.h"
#include "llava/pipeline.h"
#include "llava/train/log.h"
#include "llava/train/lora.h"
#include "llava/train/optimizer.h"
#include "llava/train/schedule.h"
#include "llava/train/stage.h"
#include "llava/torch_compat.h"
#include "llava/train/state.h"
#include "llava/train/train_config.h"
#include "test_train_support.h"

using namespace llava;
using namespace llava::testing;
namespace fs = std::filesystem;

// ------------------------------------------------------------------------------------------ schedules

TEST(Schedule, CosineWithWarmupIsTransformersClosedForm) {
  // the fixture's run: T = 6, warmup 1 (the applied lr of steps 1..6 and HF's logged lr after step 6)
  Schedule s("cosine", 6, 1);
  const double expected[] = {0.0, 1.0, 0.9045084971874737, 0.6545084971874737, 0.34549150281252633,
                             0.09549150281252633, 0.0};
  for (int i = 0; i <= 6; ++i) EXPECT_NEAR(s.lr_multiplier(i), expected[i], 1e-15) << "s=" << i;
  // general T, warmup: 0.5 * (1 + cos(pi * (s - w) / (T - w)))
  Schedule c("cosine", 100, 10);
  for (int i : {0, 5, 10, 37, 99, 100, 120}) {
    const double want = i < 10 ? i / 10.0 : std::max(0.0, 0.5 * (1 + std::cos(M_PI * (i - 10) / 90.0)));
    EXPECT_NEAR(c.lr_multiplier(i), want, 1e-15) << "s=" << i;
  }
}

TEST(Schedule, LinearConstantAndConstantWithWarmup) {
  Schedule lin("linear", 10, 2);
  EXPECT_DOUBLE_EQ(lin.lr_multiplier(0), 0.0);
  EXPECT_DOUBLE_EQ(lin.lr_multiplier(1), 0.5);
  EXPECT_DOUBLE_EQ(lin.lr_multiplier(2), 1.0);
  EXPECT_DOUBLE_EQ(lin.lr_multiplier(6), 0.5);  // (10 - 6) / (10 - 2)
  EXPECT_DOUBLE_EQ(lin.lr_multiplier(10), 0.0);
  EXPECT_DOUBLE_EQ(lin.lr_multiplier(12), 0.0);
  Schedule con("constant", 10, 5);
  EXPECT_DOUBLE_EQ(con.lr_multiplier(0), 1.0);
  Schedule cw("constant_with_warmup", 10, 4);
  EXPECT_DOUBLE_EQ(cw.lr_multiplier(1), 0.25);
  EXPECT_DOUBLE_EQ(cw.lr_multiplier(4), 1.0);
  EXPECT_DOUBLE_EQ(cw.lr_multiplier(9), 1.0);
  Schedule nowarm("linear", 4, 0);
  EXPECT_DOUBLE_EQ(nowarm.lr_multiplier(0), 1.0);
  EXPECT_THROW(Schedule("polynomial", 10, 0), Error);
}

TEST(Schedule, WarmupRatioRoundsUp) {
  EXPECT_EQ(warmup_steps_for(0, 0.03, 5198), 156);  // LLaVA-1.5 fine-tune: ceil(155.94)
  EXPECT_EQ(warmup_steps_for(0, 0.03, 2181), 66);   // pretrain: ceil(65.43)
  EXPECT_EQ(warmup_steps_for(7, 0.03, 2181), 7);    // warmup_steps wins
  EXPECT_EQ(warmup_steps_for(0, 0.0, 100), 0);
}

// ------------------------------------------------------------------------------------------ log formats

TEST(LogFormat, PythonReprOfFloats) {
  EXPECT_EQ(py_repr(5.882352941176471e-07), "5.882352941176471e-07");
  EXPECT_EQ(py_repr(58.519387034620586), "58.519387034620586");
  EXPECT_EQ(py_repr(0.0), "0.0");
  EXPECT_EQ(py_repr(2.0), "2.0");
  EXPECT_EQ(py_repr(10.9488), "10.9488");
  EXPECT_EQ(py_repr(0.001), "0.001");
  EXPECT_EQ(py_repr(0.0001), "0.0001");
  EXPECT_EQ(py_repr(1e-05), "1e-05");
  EXPECT_EQ(py_repr(2e-05), "2e-05");
  EXPECT_EQ(py_repr(0.0009045084971874737), "0.0009045084971874737");
  EXPECT_EQ(py_repr(9.549150281252633e-05), "9.549150281252633e-05");
  EXPECT_EQ(py_repr(1e16), "1e+16");
  EXPECT_EQ(py_repr(1234567890123456.0), "1234567890123456.0");
  EXPECT_EQ(py_repr(123.0), "123.0");
  EXPECT_EQ(py_repr(-0.5), "-0.5");
  EXPECT_EQ(py_repr(1.5e300), "1.5e+300");
  EXPECT_EQ(py_repr(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(py_repr(std::nan("")), "nan");
  EXPECT_EQ(py_repr(INFINITY), "inf");
}

TEST(LogFormat, PythonRound) {
  EXPECT_EQ(py_round(10.948846817016602, 4), 10.9488);
  EXPECT_EQ(py_round(11.106451034545898, 4), 11.1065);
  EXPECT_EQ(py_round(10.804996490478516, 4), 10.805);  // the fixture's hf_logged_loss
  EXPECT_EQ(py_round(0.125, 2), 0.12);                 // an exact tie goes to even
  EXPECT_EQ(py_round(2.675, 2), 2.67);                 // 2.675 is 2.67499999... in binary
  EXPECT_EQ(py_round(1.0 / 3.0, 2), 0.33);
  EXPECT_EQ(py_round(2.0 / 3.0, 2), 0.67);
}

TEST(LogFormat, HfDictLine) {
  LogDict d;
  d.add("loss", 2.3617).add("grad_norm", 58.519387034620586).add("learning_rate", 5.882352941176471e-07).add("epoch", 0.0);
  EXPECT_EQ(d.to_python(),
            "{'loss': 2.3617, 'grad_norm': 58.519387034620586, 'learning_rate': 5.882352941176471e-07, 'epoch': 0.0}");
}

TEST(LogFormat, TqdmBar) {
  // 150 of 5198 at 6.93 s/it after 17:20 (tqdm: 10-cell bar without a known width)
  EXPECT_EQ(Progress::format_bar(150, 5198, 1040.5, 1.0 / 6.93, -1),
            "  3%|\u258E         | 150/5198 [17:20<9:43:02,  6.93s/it]");
  EXPECT_EQ(Progress::format_bar(1, 1110, 8.74, 1.0 / 8.74, -1),
            "  0%|          | 1/1110 [00:08<2:41:32,  8.74s/it]");
  EXPECT_EQ(Progress::format_bar(6, 6, 1.5, 4.0, -1), "100%|\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588| 6/6 [00:01<00:00,  4.00it/s]");
  EXPECT_EQ(Progress::format_bar(0, 6, 0.0, 0.0, 0), "  0% 0/6 [00:00<?, ?it/s]");  // no bar (plain lines)
  // the bar fills a terminal's width
  const std::string wide = Progress::format_bar(3, 6, 1.0, 3.0, 60);
  size_t cells = 0;
  for (unsigned char ch : wide) cells += (ch & 0xC0) != 0x80;
  EXPECT_EQ(cells, 60u) << wide;
  EXPECT_EQ(format_interval(3723), "1:02:03");
  EXPECT_EQ(format_interval(59.9), "00:59");
}

// ------------------------------------------------------------------------------------------ optimizer

namespace {

// One step of the trainer's protocol for a single backward (one process).
void optimizer_step(Optimizer& opt, const torch::Tensor& loss, double scale = 1.0) {
  opt.begin_backward(true);
  loss.backward();
  opt.end_backward();
  opt.reduce_gradients(scale);
  opt.step(1.0);
  opt.zero_grad();
}

}  // namespace

TEST(Optimizer, AdamWMatchesTorchAdamW) {
  torch::manual_seed(0);
  torch::Tensor w1 = torch::randn({5, 3}).requires_grad_(), b1 = torch::randn({5}).requires_grad_();
  torch::Tensor w2 = w1.detach().clone().requires_grad_(), b2 = b1.detach().clone().requires_grad_();
  OptimizerConfig cfg;
  cfg.learning_rate = 1e-2;
  cfg.weight_decay = 0.1;  // not on the bias (its name ends with .bias)
  Optimizer mine({{"w", w1}, {"layer.bias", b1}}, cfg, nullptr);
  torch::optim::AdamW theirs({torch::optim::OptimizerParamGroup({w2}, std::make_unique<torch::optim::AdamWOptions>(
                                                                         torch::optim::AdamWOptions(1e-2).weight_decay(0.1))),
                              torch::optim::OptimizerParamGroup({b2}, std::make_unique<torch::optim::AdamWOptions>(
                                                                         torch::optim::AdamWOptions(1e-2).weight_decay(0.0)))});
  for (int step = 0; step < 5; ++step) {
    torch::Tensor x = torch::randn({4, 3});
    optimizer_step(mine, (x.matmul(w1.t()) + b1).pow(2).sum());
    ((x.matmul(w2.t()) + b2).pow(2).sum()).backward();
    theirs.step();
    theirs.zero_grad();
  }
  EXPECT_LE((w1 - w2).abs().max().item<double>(), 1e-6);
  EXPECT_LE((b1 - b2).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(mine.step_count(), 5);
}

TEST(Optimizer, NoDecayOnBiasesAndNorms) {
  EXPECT_TRUE(is_no_decay_parameter("language_model.model.layers.0.input_layernorm.weight"));
  EXPECT_TRUE(is_no_decay_parameter("multi_modal_projector.linear_1.bias"));
  EXPECT_TRUE(is_no_decay_parameter("vision_tower.vision_model.pre_layrnorm.weight"));
  EXPECT_FALSE(is_no_decay_parameter("language_model.model.embed_tokens.weight"));
  EXPECT_FALSE(is_no_decay_parameter("multi_modal_projector.linear_2.weight"));
}

TEST(Optimizer, ParameterGroupsFromTheRules) {
  torch::Tensor t = torch::zeros({2}).requires_grad_();
  OptimizerConfig cfg;
  cfg.learning_rate = 1e-4;
  cfg.weight_decay = 0.1;
  cfg.projector_lr = 2e-5;
  auto groups = make_param_groups({{"language_model.model.layers.0.mlp.up_proj.weight", t},
                                   {"language_model.model.norm.weight", t},
                                   {"multi_modal_projector.linear_1.weight", t},
                                   {"multi_modal_projector.linear_1.bias", t},
                                   {"vision_tower.vision_model.post_layernorm.weight", t}},
                                  cfg);
  ASSERT_EQ(groups.size(), 5u);
  auto expect = [&](size_t g, const std::string& name, double lr, double wd, std::vector<size_t> members) {
    EXPECT_EQ(groups[g].name, name);
    EXPECT_EQ(groups[g].base_lr, lr) << name;
    EXPECT_EQ(groups[g].weight_decay, wd) << name;
    EXPECT_EQ(groups[g].members, members) << name;
  };
  expect(0, "llm", 1e-4, 0.1, {0});
  expect(1, "llm.no_decay", 1e-4, 0.0, {1});
  expect(2, "projector", 2e-5, 0.1, {2});
  expect(3, "projector.no_decay", 2e-5, 0.0, {3});
  expect(4, "vision_tower.no_decay", 1e-4, 0.0, {4});  // no --mm_vision_tower_lr: the base lr
}

TEST(Optimizer, Bf16ParametersUseFp32MastersAndGradients) {
  torch::manual_seed(1);
  torch::Tensor ref = torch::randn({64}).requires_grad_();
  torch::Tensor low = ref.detach().to(torch::kBFloat16).requires_grad_();
  torch::Tensor ref_copy = low.detach().to(torch::kFloat).requires_grad_();  // same start as the bf16 one
  OptimizerConfig cfg;
  cfg.learning_rate = 1e-3;
  Optimizer a({{"p", low}}, cfg, nullptr), b({{"p", ref_copy}}, cfg, nullptr);
  auto names = [](const Optimizer& o) {
    std::vector<std::string> n;
    for (const auto& [name, t] : o.state_tensors()) n.push_back(name);
    return n;
  };
  EXPECT_EQ(names(a), (std::vector<std::string>{"p.exp_avg", "p.exp_avg_sq", "p.master"}));
  EXPECT_EQ(names(b), (std::vector<std::string>{"p.exp_avg", "p.exp_avg_sq"}));  // fp32: its own master
  // two micro-batches accumulated in fp32, many tiny steps: the bf16 weights follow the fp32 master
  for (int step = 0; step < 20; ++step) {
    for (int m = 0; m < 2; ++m) {
      torch::Tensor g = torch::full({64}, 1e-3 * (m + 1));
      a.begin_backward(m == 1);
      (low * g.to(torch::kBFloat16)).sum().backward();
      a.end_backward();
      EXPECT_EQ(low.grad().abs().sum().item<double>(), 0.0);  // moved into the fp32 buffer
      b.begin_backward(m == 1);
      (ref_copy * g).sum().backward();
      b.end_backward();
    }
    a.reduce_gradients(1.0);
    b.reduce_gradients(1.0);
    a.step(1.0);
    b.step(1.0);
    a.zero_grad();
    b.zero_grad();
  }
  // 20 steps of lr 1e-3 move each weight by ~0.02: far below bf16's resolution near 1, yet the master tracks it
  const std::string dir = train_tmp("adamw_state");
  save_optimizer_state(a, dir, 0);
  auto masters = read_tensors(dir + "/optimizer.rank0.safetensors");
  EXPECT_LE((masters.at("p.master") - ref_copy.detach()).abs().max().item<double>(), 1e-6);
  EXPECT_LE((low.detach().to(torch::kFloat) - ref_copy.detach()).abs().max().item<double>(), 0.02);
  // state round trip
  torch::Tensor other = ref.detach().to(torch::kBFloat16).requires_grad_();
  Optimizer c({{"p", other}}, cfg, nullptr);
  load_optimizer_state(c, dir);
  EXPECT_EQ(c.step_count(), 20);
  EXPECT_TRUE(torch::equal(other, low));
  Optimizer wrong({{"q", torch::zeros({64}).requires_grad_()}}, cfg, nullptr);
  EXPECT_THROW(load_optimizer_state(wrong, dir), Error);
}

TEST(Optimizer, GradNormScalingAndClipping) {
  torch::Tensor x = torch::zeros({4}).requires_grad_(), unused = torch::zeros({3}).requires_grad_(),
                y = torch::zeros({1}).requires_grad_();
  Optimizer opt({{"x", x}, {"unused", unused}, {"y", y}}, OptimizerConfig{}, nullptr);
  opt.begin_backward(true);
  ((x * 3.0).sum() + (y * 4.0).sum()).backward();  // gradients 3 (x4) and 4; `unused` gets none
  opt.end_backward();
  opt.reduce_gradients(1.0);
  EXPECT_NEAR(opt.grad_norm(), std::sqrt(4 * 9.0 + 16.0), 1e-5);
  opt.reduce_gradients(0.5);
  EXPECT_NEAR(opt.grad_norm(), 0.5 * std::sqrt(4 * 9.0 + 16.0), 1e-5);
  EXPECT_EQ(clip_coefficient(10.0, 0.0), 1.0);  // no clipping
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_coefficient(4.0, 1.0), 1.0 / (4.0 + 1e-6));  // torch.nn.utils.clip_grad_norm_
}

// torch.optim.AdamW(fused=True)'s kernel gives the foreach update (LibTorch >= 2.4 has it on the CPU).
TEST(Optimizer, FusedAdamWEqualsForeach) {
  if (!compat::has_fused_adamw(torch::kCPU)) GTEST_SKIP() << "this LibTorch has no fused AdamW on the CPU (>= 2.4)";
  torch::manual_seed(5);
  AdamWTensors a, b;
  for (int64_t n : {7, 300, 1}) {
    a.params.push_back(torch::randn({n}));
    a.grads.push_back(torch::randn({n}));
    a.exp_avgs.push_back(torch::rand({n}) * 0.1);
    a.exp_avg_sqs.push_back(torch::rand({n}) * 0.01);
    b.params.push_back(a.params.back().clone());
    b.grads.push_back(a.grads.back().clone());
    b.exp_avgs.push_back(a.exp_avgs.back().clone());
    b.exp_avg_sqs.push_back(a.exp_avg_sqs.back().clone());
  }
  OptimizerConfig cfg;
  for (int64_t step = 1; step <= 3; ++step) {
    adamw_update(a, 1e-2, 0.1, step, cfg, /*allow_fused=*/true);
    adamw_update(b, 1e-2, 0.1, step, cfg, /*allow_fused=*/false);
  }
  double worst = 0;
  for (size_t i = 0; i < a.params.size(); ++i) {
    worst = std::max(worst, (a.params[i] - b.params[i]).abs().max().item<double>());
    EXPECT_LE((a.exp_avg_sqs[i] - b.exp_avg_sqs[i]).abs().max().item<double>(), 1e-7);
  }
  std::printf("  fused vs foreach AdamW after 3 steps: max |param diff| %.2e\n", worst);
  EXPECT_LE(worst, 1e-6);
}

// ------------------------------------------------------------------------------------------ state

TEST(State, TrainerStateRoundTrip) {
  TrainerState s;
  s.global_step = 12;
  s.epoch = 1.5;
  s.next_epoch = 1;
  s.next_batch = 3;
  s.loss_total = 0.1 + 0.2;
  s.loss_steps = 11;
  s.window_loss = 1.0 / 3.0;
  s.window_steps = 1;
  s.log_history.push_back({{"loss", 2.5}, {"step", 1}});
  const std::string dir = train_tmp("state");
  s.write(dir + "/trainer_state.json");
  TrainerState r = TrainerState::read(dir + "/trainer_state.json");
  EXPECT_EQ(r.global_step, 12);
  EXPECT_EQ(r.next_batch, 3);
  EXPECT_EQ(r.loss_total, 0.1 + 0.2);  // doubles survive exactly
  EXPECT_EQ(r.window_loss, 1.0 / 3.0);
  EXPECT_EQ(r.log_history.size(), 1u);
  auto j = nlohmann::json::parse(read_file(dir + "/trainer_state.json"));
  for (const char* key : {"best_metric", "epoch", "global_step", "log_history", "max_steps", "train_batch_size"})
    EXPECT_TRUE(j.contains(key)) << key;
}

TEST(State, AtomicCheckpointDirectories) {
  const std::string out = train_tmp("ckpt_dirs");
  auto complete = [](const std::string& tmp) { std::ofstream(tmp + "/trainer_state.json") << "{}"; };
  EXPECT_EQ(save_checkpoint_atomic(out, 10, complete), out + "/checkpoint-10");
  EXPECT_THROW(save_checkpoint_atomic(out, 20,
                                      [](const std::string& tmp) {
                                        std::ofstream(tmp + "/model.safetensors") << "half";
                                        throw std::runtime_error("crash");
                                      }),
               std::runtime_error);
  EXPECT_FALSE(fs::exists(out + "/checkpoint-20"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-20.tmp"));
  // a directory without trainer_state.json (e.g. copied by hand, half done) never counts as a checkpoint
  fs::create_directories(out + "/checkpoint-30");
  fs::create_directories(out + "/checkpoint-40.tmp");
  EXPECT_EQ(find_latest_checkpoint(out), out + "/checkpoint-10");
  remove_partial_checkpoints(out);
  EXPECT_FALSE(fs::exists(out + "/checkpoint-40.tmp"));
  save_checkpoint_atomic(out, 11, complete);
  save_checkpoint_atomic(out, 12, complete);
  save_checkpoint_atomic(out, 12, complete);  // the same step again replaces it
  rotate_checkpoints(out, 2);
  auto all = list_checkpoints(out);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 11);
  EXPECT_EQ(all[1].first, 12);
}

TEST(State, RngStateRoundTrip) {
  const std::string dir = train_tmp("rng");
  torch::manual_seed(123);
  torch::rand({3});
  save_rng_state(dir, 0, 1);
  torch::Tensor a = torch::rand({5});
  torch::manual_seed(999);
  load_rng_state(dir, 0);
  torch::Tensor b = torch::rand({5});
  EXPECT_TRUE(torch::equal(a, b));
}

// ------------------------------------------------------------------------------------------ LoRA

namespace {

// A text-only batch: every token real.
LlavaInputs text_inputs(const torch::Tensor& ids, const torch::Tensor& labels) {
  LlavaInputs in;
  in.input_ids = ids;
  in.labels = labels;
  return in;
}

bool is_adapter(const std::string& name) {
  auto ends = [&](const char* s) { return name.size() > 7 && name.compare(name.size() - 7, 7, s) == 0; };
  return ends(".lora_A") || ends(".lora_B");
}

}  // namespace

TEST(Lora, StartsAsTheBaseModelAndMergesExactly) {
  LoadedLlava l = load_llava(tiny_model_dir());
  auto& m = *l.model;
  torch::manual_seed(0);
  torch::Tensor ids = torch::randint(3, 299, {2, 12});
  torch::Tensor labels = ids.clone();
  labels.narrow(1, 0, 4).fill_(-100);
  auto loss = [&] {
    torch::NoGradGuard ng;
    return m.forward(text_inputs(ids, labels)).loss().item<double>();
  };
  const double base = loss();
  const size_t n_params = m.named_parameters().size();
  install_lora(m, LoraOptions{4, 8, 0.0});
  EXPECT_EQ(m.named_parameters().size(), n_params + 2 * 7 * 2);  // A, B for 7 projections x 2 layers
  EXPECT_NEAR(loss(), base, 1e-7);  // B = 0
  {
    torch::NoGradGuard ng;
    for (auto& p : m.named_parameters())
      if (is_adapter(p.key())) p.value().normal_(0, 0.05);
  }
  const double with_lora = loss();
  EXPECT_GT(std::abs(with_lora - base), 1e-3);
  EXPECT_EQ(base_model_parameters(m).size(), n_params);  // what a save sees
  EXPECT_EQ(m.named_parameters().size(), n_params + 28);
  merge_lora(m);
  EXPECT_EQ(m.named_parameters().size(), n_params);
  EXPECT_NEAR(loss(), with_lora, 1e-5);
  // gradients reach the adapters through the layers' forward
  LoadedLlava l2 = load_llava(tiny_model_dir());
  install_lora(*l2.model, LoraOptions{4, 8, 0.0});
  for (auto& p : l2.model->named_parameters())
    if (!is_adapter(p.key())) p.value().set_requires_grad(false);
  l2.model->forward(text_inputs(ids, labels)).loss().backward();
  int with_grad = 0;
  for (auto& p : l2.model->named_parameters())
    if (p.key().find("lora_A") != std::string::npos || p.key().find("lora_B") != std::string::npos)
      with_grad += p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0;
  EXPECT_EQ(with_grad, 14);  // B gets a gradient (A's is 0 while B = 0)
}

namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// A LoRA adapter on `base` with a nonzero B (B = 0 at init would hide the adapter path).
std::shared_ptr<LoraLinearImpl> lora_on(const std::shared_ptr<DenseImpl>& base, int r, int alpha, double dropout) {
  auto lora = std::make_shared<LoraLinearImpl>(base, LoraOptions{r, alpha, dropout});
  torch::NoGradGuard ng;
  lora->lora_B.normal_(0, 0.1);
  return lora;
}

}  // namespace

TEST(LoraLinear, WithoutDropoutIsTheLinearWithTheMergedWeight) {
  torch::manual_seed(0);
  auto base = std::make_shared<DenseImpl>(24, 16, true);
  auto lora = lora_on(base, 4, 8, 0.0);  // scale 8 / 4 = 2
  torch::Tensor x = torch::randn({3, 5, 24});
  torch::Tensor y = base->forward(x);
  torch::Tensor got = lora->forward(x);
  // Independently: an nn::Linear in fp64 whose weight is W0 + s * B @ A (what PEFT's merge computes).
  torch::nn::Linear merged(torch::nn::LinearOptions(24, 16).bias(true));
  merged->to(torch::kDouble);
  {
    torch::NoGradGuard ng;
    merged->weight.copy_(base->weight.to(torch::kDouble) +
                         2.0 * torch::mm(lora->lora_B.to(torch::kDouble), lora->lora_A.to(torch::kDouble)));
    merged->bias.copy_(base->bias.to(torch::kDouble));
  }
  torch::Tensor want = merged(x.to(torch::kDouble));
  std::printf("  |adapter - merged linear| %.2e, adapter's effect %.2e\n", max_abs_diff(got, want),
              max_abs_diff(got, y));
  EXPECT_LE(max_abs_diff(got, want), 1e-5);  // fp32 rounding
  EXPECT_GT(max_abs_diff(got, y), 1e-2);     // the adapter path does something
}

TEST(LoraLinear, DropoutActsOnTheAdapterInputInTrainingModeOnly) {
  // A = B = I, scale 1: the adapter adds exactly dropout(x), so each element added is 0 or x / (1 - p).
  const int64_t n = 64;
  const double p = 0.5;
  auto zero = std::make_shared<DenseImpl>(n, n, false);
  {
    torch::NoGradGuard ng;
    zero->weight.zero_();
  }
  LoraLinearImpl identity(zero, LoraOptions{static_cast<int>(n), static_cast<int>(n), p});
  {
    torch::NoGradGuard ng;
    identity.lora_A.copy_(torch::eye(n));
    identity.lora_B.copy_(torch::eye(n));
  }
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({200, n});
  torch::Tensor added = identity.forward(x);  // the base layer adds 0
  torch::Tensor dropped = added.abs() < 1e-6;
  torch::Tensor kept_ok = (added - x / (1 - p)).abs() <= 1e-5 * (1 + x.abs());
  EXPECT_TRUE(dropped.logical_or(kept_ok).all().item<bool>());
  const double dropped_fraction = dropped.to(torch::kDouble).mean().item<double>();
  std::printf("  dropped fraction %.4f (p = %.2f)\n", dropped_fraction, p);
  EXPECT_NEAR(dropped_fraction, p, 0.02);  // 12800 Bernoulli draws: sd 0.0044

  // A general adapter: the mask depends on the RNG state and is reproducible from it.
  torch::manual_seed(1);
  auto base = std::make_shared<DenseImpl>(32, 20, false);
  auto with_dropout = lora_on(base, 4, 8, 0.3);
  auto without = std::make_shared<LoraLinearImpl>(base, LoraOptions{4, 8, 0.0});
  {
    torch::NoGradGuard ng;
    without->lora_A.copy_(with_dropout->lora_A);
    without->lora_B.copy_(with_dropout->lora_B);
  }
  torch::Tensor xs = torch::randn({4, 32});
  torch::manual_seed(10);
  torch::Tensor a = with_dropout->forward(xs);
  torch::manual_seed(11);
  torch::Tensor b = with_dropout->forward(xs);
  torch::manual_seed(10);
  torch::Tensor a_again = with_dropout->forward(xs);
  EXPECT_GT(max_abs_diff(a, b), 1e-3);
  EXPECT_TRUE(torch::equal(a, a_again));
  EXPECT_GT(max_abs_diff(a, without->forward(xs)), 1e-3);
  // Evaluation mode: no dropout, the p = 0 adapter's output.
  with_dropout->eval();
  torch::manual_seed(11);
  EXPECT_TRUE(torch::equal(with_dropout->forward(xs), without->forward(xs)));
}

TEST(Lora, DropoutFollowsTheModelsTrainingMode) {
  LoadedLlava l = load_llava(tiny_model_dir());
  auto& m = *l.model;
  torch::manual_seed(0);
  torch::Tensor ids = torch::randint(3, 299, {2, 12});
  torch::Tensor labels = ids.clone();
  auto loss_with_seed = [&](uint64_t seed) {
    torch::NoGradGuard ng;
    torch::manual_seed(seed);
    return m.forward(text_inputs(ids, labels)).loss().item<double>();
  };
  install_lora(m, LoraOptions{4, 8, 0.5});
  {
    torch::NoGradGuard ng;
    for (auto& p : m.named_parameters())
      if (is_adapter(p.key())) p.value().normal_(0, 0.05);
  }
  m.train();
  EXPECT_GT(std::abs(loss_with_seed(1) - loss_with_seed(2)), 1e-6);
  EXPECT_EQ(loss_with_seed(1), loss_with_seed(1));
  m.eval();
  const double eval_loss = loss_with_seed(1);
  EXPECT_EQ(eval_loss, loss_with_seed(2));
  // ... which is the merged model's loss (no dropout in the merged weights)
  merge_lora(m);
  EXPECT_NEAR(loss_with_seed(3), eval_loss, 1e-5);
}

TEST(Lora, GradientCheckpointingGivesTheSameAdapterGradients) {
  torch::manual_seed(0);
  torch::Tensor ids = torch::randint(3, 299, {2, 12});
  torch::Tensor labels = ids.clone();
  labels.narrow(1, 0, 4).fill_(-100);
  for (double p : {0.0, 0.3}) {
    LoadedLlava l = load_llava(tiny_model_dir());
    auto& m = *l.model;
    install_lora(m, LoraOptions{4, 8, p});
    m.train();
    std::vector<std::pair<std::string, torch::Tensor>> adapters;
    {
      torch::NoGradGuard ng;
      for (auto& item : m.named_parameters()) {
        const bool adapter = is_adapter(item.key());
        item.value().set_requires_grad(adapter);
        if (adapter) {
          item.value().normal_(0, 0.05);  // B != 0: A gets a gradient too
          adapters.emplace_back(item.key(), item.value());
        }
      }
    }
    ASSERT_EQ(adapters.size(), 28u);
    // one forward + backward from the same RNG state; the adapters' gradients and the RNG state after it
    auto run = [&](bool checkpointing) {
      m.set_gradient_checkpointing(checkpointing);
      for (auto& [name, t] : adapters) t.mutable_grad() = torch::Tensor();
      torch::manual_seed(42);
      m.forward(text_inputs(ids, labels)).loss().backward();
      std::vector<torch::Tensor> grads;
      for (auto& [name, t] : adapters) grads.push_back(t.grad().clone());
      return std::make_pair(grads, torch::rand({4}));
    };
    auto [plain, rng_plain] = run(false);
    auto [checkpointed, rng_checkpointed] = run(true);
    double worst = 0, largest = 0;
    for (size_t i = 0; i < adapters.size(); ++i) {
      const double d = max_abs_diff(plain[i], checkpointed[i]);
      EXPECT_LE(d, 1e-6 + 1e-5 * plain[i].abs().max().item<double>()) << adapters[i].first;
      worst = std::max(worst, d);
      largest = std::max(largest, plain[i].abs().max().item<double>());
    }
    std::printf("  dropout %.1f: max |grad diff| %.2e (largest |grad| %.2e)\n", p, worst, largest);
    EXPECT_GT(largest, 1e-4);
    // checkpointing replays the layers' draws and leaves the random stream where the plain run leaves it
    EXPECT_TRUE(torch::equal(rng_plain, rng_checkpointed));
  }
}

// ------------------------------------------------------------------------------------------ one configuration

// The data side counts image positions from the configuration the model is built from: an HF directory whose
// vision_feature_select_strategy is "full" (CLS kept) gives 4 patches + 1 on both sides, and a flag overrides both.
TEST(ModelConfiguration, DataAndModelAgreeOnPositionsPerImage) {
  const std::string dir = train_tmp("full_strategy") + "/model";
  fs::copy(tiny_model_dir(), dir, fs::copy_options::recursive);
  nlohmann::json c = nlohmann::json::parse(read_file(dir + "/config.json"));
  ASSERT_EQ(c.value("vision_feature_select_strategy", ""), "default");
  c["vision_feature_select_strategy"] = "full";
  std::ofstream(dir + "/config.json") << c.dump(2);
  Options o = tiny_options("", train_tmp("full_strategy_out"));
  o.model_name_or_path = dir;
  auto data = make_data_pipeline(o, false);
  LoadedLlava model = load_llava(dir, model_load_options(o));
  EXPECT_EQ(model.config.num_image_tokens(), 5);
  EXPECT_EQ(data->example.image_feature_positions, 5);
  o.mm_vision_select_feature = "patch";  // as the flag sets it
  o.set_keys.insert("mm_vision_select_feature");
  EXPECT_EQ(make_data_pipeline(o, false)->example.image_feature_positions, 4);
  EXPECT_EQ(load_llava(dir, model_load_options(o)).config.num_image_tokens(), 4);
  // and a --model_max_length shorter than one image is an error, not a run that skips every image sample
  o.model_max_length = 3;
  EXPECT_THROW(make_data_pipeline(o, false), Error);
}

// ------------------------------------------------------------------ LLaVA-NeXT's launch-line flags (#17)

namespace {

// The parts whose parameters train: vision, projector, llm (LLM base weights), lora (adapters), newline.
std::set<std::string> trained_parts(LlavaForCausalLMImpl& m) {
  std::set<std::string> parts;
  for (const auto& item : m.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    const std::string& n = item.key();
    if (n.rfind("vision_tower.", 0) == 0) parts.insert("vision");
    else if (n.rfind("multi_modal_projector.", 0) == 0) parts.insert("projector");
    else if (n == "image_newline") parts.insert("newline");
    else if (n.find(".lora_") != std::string::npos) parts.insert("lora");
    else parts.insert("llm");
  }
  return parts;
}

std::string joined(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : ",") + x;
  return out;
}

// The tiny model with LLaVA-1.6's image_newline (spatial_unpad anyres), so every part exists.
LoadedLlava tiny_model_with_newline() {
  LoadedLlava l = load_llava(tiny_model_dir());
  AnyresConfig a{{{28, 56}, {56, 28}}, 28, 2, 4, PatchMerge::kSpatialUnpad, 0};
  l.model->configure_images(a, "anyres", 11);
  EXPECT_TRUE(l.model->image_newline.defined());
  return l;
}

Options flag_options(const std::string& name) { return tiny_options("", train_tmp(name)); }

// As the command line sets them (the stage flags' precedence looks at which were given).
void set_parts(Options& o, const std::string& parts) {
  o.mm_tunable_parts = parts;
  o.set_keys.insert("mm_tunable_parts");
}
void set_flag(Options& o, const std::string& flag) {
  if (flag == "tune_mm_mlp_adapter") o.tune_mm_mlp_adapter = true;
  else if (flag == "freeze_backbone") o.freeze_backbone = true;
  else if (flag == "freeze_mm_mlp_adapter") o.freeze_mm_mlp_adapter = true;
  else if (flag == "unfreeze_mm_vision_tower") o.unfreeze_mm_vision_tower = true;
  else if (flag == "lora_enable") o.lora_enable = true;
  else ADD_FAILURE() << "set_flag: " << flag;
  o.set_keys.insert(flag);
}

}  // namespace

// --mm_tunable_parts, LLaVA-NeXT's train(): everything frozen, then each listed part; the LLM part is every
// parameter outside the tower and the projector (lm_head and image_newline included).
TEST(Stage, TunablePartsDecideWhichParametersTrain) {
  LoadedLlava l = tiny_model_with_newline();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"mm_mlp_adapter", "projector"},
      {"mm_vision_tower,mm_mlp_adapter,mm_language_model", "llm,newline,projector,vision"},
      {"mm_mlp_adapter,mm_language_model", "llm,newline,projector"},
      {"mm_language_model", "llm,newline"},
      {"mm_vision_tower", "vision"},
      {" mm_vision_tower , mm_mlp_adapter", "projector,vision"},
      {"mm_vision_resampler,mm_mlp_adapter", "projector"},  // no resampler: nothing more trains
  };
  for (const auto& [value, want] : cases) {
    Options o = flag_options("tunable_parts");
    set_parts(o, value);
    const TrainConfig c = TrainConfig::from_options(o);
    const std::string stage = apply_stage(*l.model, c.stage);
    const std::string got = joined(trained_parts(*l.model));
    std::printf("  --mm_tunable_parts '%s' -> %s (%s)\n", value.c_str(), got.c_str(), stage.c_str());
    EXPECT_EQ(got, want) << value;
    // LLaVA-NeXT saves the projector alone exactly when it is the only part
    EXPECT_EQ(c.stage.tune_mm_mlp_adapter, value == "mm_mlp_adapter") << value;
  }
  // without it, LLaVA's flags as before
  apply_stage(*l.model, TrainConfig::from_options(flag_options("tunable_none")).stage);
  EXPECT_EQ(joined(trained_parts(*l.model)), "llm,newline,projector");
}

// Given together, --mm_tunable_parts wins over the four stage flags (LLaVA-NeXT's precedence), and says so.
TEST(Stage, TunablePartsOverrideTheStageFlags) {
  LoadedLlava l = tiny_model_with_newline();
  struct Case {
    const char* flag;
    const char* parts;
    const char* want;
  };
  for (const Case& k : {Case{"tune_mm_mlp_adapter", "mm_vision_tower,mm_mlp_adapter,mm_language_model",
                             "llm,newline,projector,vision"},
                        Case{"freeze_backbone", "mm_language_model", "llm,newline"},
                        Case{"freeze_mm_mlp_adapter", "mm_mlp_adapter", "projector"},
                        Case{"unfreeze_mm_vision_tower", "mm_mlp_adapter,mm_language_model", "llm,newline,projector"}}) {
    Options o = flag_options("tunable_precedence");
    set_flag(o, k.flag);
    set_parts(o, k.parts);
    const std::string stage = apply_stage(*l.model, TrainConfig::from_options(o).stage);
    EXPECT_EQ(joined(trained_parts(*l.model)), k.want) << k.flag << " + " << k.parts;
    EXPECT_NE(stage.find(std::string("overrides --") + k.flag), std::string::npos) << stage;
  }
}

TEST(Stage, TunablePartsWithLoraAndBadLists) {
  // LoRA: mm_language_model trains the adapters (and image_newline), the LLM's base weights stay frozen
  LoadedLlava l = tiny_model_with_newline();
  install_lora(*l.model, {4, 8, 0.0});
  Options o = flag_options("tunable_lora");
  set_flag(o, "lora_enable");
  set_parts(o, "mm_mlp_adapter,mm_language_model");
  apply_stage(*l.model, TrainConfig::from_options(o).stage);
  EXPECT_EQ(joined(trained_parts(*l.model)), "lora,newline,projector");
  // LoRA without mm_language_model would train no adapter: refused
  set_parts(o, "mm_mlp_adapter");
  try {
    TrainConfig::from_options(o);
    ADD_FAILURE() << "lora_enable with mm_tunable_parts mm_mlp_adapter accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mm_language_model"), std::string::npos) << e.what();
  }
  for (const std::string bad : {"mm_projector", "", " , "}) {
    Options b = flag_options("tunable_bad");
    set_parts(b, bad);
    try {
      TrainConfig::from_options(b);
      ADD_FAILURE() << "'" << bad << "' accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--mm_tunable_parts"), std::string::npos) << e.what();
      if (bad == "mm_projector") {
        EXPECT_NE(std::string(e.what()).find("'mm_projector'"), std::string::npos) << e.what();
      }
    }
  }
}

// --mm_vision_tower_lr: the vision tower's parameter groups get their own learning rate (LLaVATrainer's
// create_optimizer), the LLM keeps --learning_rate and the projector --mm_projector_lr.
TEST(Optimizer, VisionTowerLearningRateIsItsOwnGroup) {
  LoadedLlava l = tiny_model_with_newline();
  Options o = flag_options("vision_tower_lr");
  o.learning_rate = 1e-5;
  o.mm_projector_lr = 2e-5;
  o.mm_vision_tower_lr = 2e-6;
  set_parts(o, "mm_vision_tower,mm_mlp_adapter,mm_language_model");
  const TrainConfig c = TrainConfig::from_options(o);
  EXPECT_EQ(c.optimizer.vision_tower_lr, 2e-6);
  apply_stage(*l.model, c.stage);
  std::vector<NamedParameter> trainable;
  for (auto& item : l.model->named_parameters())
    if (item.value().requires_grad()) trainable.push_back({item.key(), item.value()});
  Optimizer opt(trainable, c.optimizer, nullptr);
  std::map<std::string, double> lr;
  for (const ParamGroup& g : opt.groups()) {
    lr[g.name] = g.base_lr;
    std::printf("  group %-22s lr %.1e, %zu tensors\n", g.name.c_str(), g.base_lr, g.members.size());
    for (size_t m : g.members) {
      const bool vision = trainable[m].name.rfind("vision_tower.", 0) == 0;
      EXPECT_EQ(vision, g.name.rfind("vision_tower", 0) == 0) << trainable[m].name << " in " << g.name;
    }
  }
  EXPECT_EQ(lr["vision_tower"], 2e-6);
  EXPECT_EQ(lr["vision_tower.no_decay"], 2e-6);
  EXPECT_EQ(lr["llm"], 1e-5);
  EXPECT_EQ(lr["projector"], 2e-5);
  o.mm_vision_tower_lr = -1;
  EXPECT_THROW(TrainConfig::from_options(o), Error);
}

// --attn_implementation: sdpa and flash_attention_2 run the fused SDPA path, eager the written-out one; both
// give the same hidden states.
TEST(Attention, AttnImplementationSelectsTheAttentionPath) {
  EXPECT_TRUE(fused_attention("sdpa"));
  EXPECT_TRUE(fused_attention("flash_attention_2"));
  EXPECT_FALSE(fused_attention("eager"));
  try {
    fused_attention("flash_attention_3");
    ADD_FAILURE() << "flash_attention_3 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'flash_attention_3'"), std::string::npos) << e.what();
  }
  torch::manual_seed(0);
  const torch::Tensor embeds = torch::randn({2, 9, tiny_config().text.hidden_size});
  std::map<std::string, torch::Tensor> hidden;
  for (const std::string impl : {"sdpa", "flash_attention_2", "eager"}) {
    Options o = flag_options("attn_impl");
    o.attn_implementation = impl;
    const LoadOptions lo = TrainConfig::from_options(o).load;
    EXPECT_EQ(lo.fused_attention, impl != "eager") << impl;
    LoadedLlava l = load_llava(tiny_model_dir(), lo);
    for (const auto& layer : l.model->language_model->model->layers)
      EXPECT_EQ(layer->self_attn->use_fused_attention, impl != "eager") << impl;
    torch::NoGradGuard no_grad;
    hidden[impl] = l.model->language_model->model->forward(embeds);
  }
  const double diff = (hidden["sdpa"] - hidden["eager"]).abs().max().item<double>();
  std::printf("  max |sdpa - eager| of the hidden states: %.2e (LibTorch %s fused kernel)\n", diff,
              compat::has_fused_attention() ? "with a" : "without a");
  EXPECT_LE(diff, 1e-5);
  EXPECT_TRUE(torch::equal(hidden["sdpa"], hidden["flash_attention_2"]));
}

// --dataloader_drop_last reaches the loop's settings (its effect: Sampler.DropLastDropsTheIncompleteGlobalBatch);
// --frames_upbound and --video_folder are accepted (a video sample is a bad sample: TinyData.BadSamples...).
TEST(TrainConfig, DataloaderDropLastAndVideoFlags) {
  Options o = flag_options("drop_last");
  EXPECT_FALSE(TrainConfig::from_options(o).loop.dataloader_drop_last);
  o.dataloader_drop_last = true;
  o.video_folder = "/nonexistent/llava_video";
  o.frames_upbound = 32;
  EXPECT_TRUE(TrainConfig::from_options(o).loop.dataloader_drop_last);
  o.frames_upbound = -1;
  EXPECT_THROW(TrainConfig::from_options(o), Error);
}
