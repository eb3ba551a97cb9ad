"""The training stage: LoRA SFT on the text decoder, completion-only loss, resumable, under Accelerate.

May import: data (records), model, pycheck and the leaf modules.
Modules: config (TrainConfig: the `tunelens train` flags), setup (everything before the first step),
loop (optimizer steps), loss (masked cross-entropy with a blocked head), run (the stage: setup, loop,
output), lora_setup (which linears get LoRA), lora_fused (a LoRA linear as one autograd node),
packed_attention, encoding (records to token ids and trained spans), checkpoints, metrics.
"""
