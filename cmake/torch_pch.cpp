// Anchor for the precompiled <torch/torch.h>; see LlavaTorch.cmake.
