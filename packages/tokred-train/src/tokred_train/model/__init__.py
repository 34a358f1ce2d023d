"""The model a run trains: build it (tiny or Hugging Face), quantize it to 4 bits for
QLoRA, patch the reduction in, and add LoRA adapters.

    builder   load -> (4-bit) -> reduction patch -> (LoRA) -> checks
    lora      full fine-tuning, LoRA and QLoRA over the patched model
    quantize  4-bit linears for a model built in memory
"""
