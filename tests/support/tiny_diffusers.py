"""A tiny, randomly initialised Stable Diffusion inpainting pipeline built offline.

Every component is built from a config (no hub, no weights download) in the shapes
diffusers' own ``StableDiffusionInpaintPipelineFastTests`` use, shrunk further so a
few inference steps take well under a second on CPU.  The pipeline is written with
``save_pretrained`` so tests exercise the real ``from_pretrained(<local folder>)``
loading path of :mod:`clearmark.removal.inpaint`.

Its native resolution is ``UNET_SAMPLE_SIZE * VAE_SCALE_FACTOR`` = 64 pixels.
"""

from __future__ import annotations

from pathlib import Path

UNET_SAMPLE_SIZE = 32
VAE_SCALE_FACTOR = 2  # two VAE blocks -> one downsampling
TEXT_HIDDEN_SIZE = 32


def tiny_clip_tokenizer():  # -> transformers.CLIPTokenizer
    """A CLIP BPE tokenizer over single byte-level characters, built in memory.

    CLIP's byte-level BPE needs every base symbol, alone and with the end-of-word
    suffix ``</w>``, in its vocabulary; with no merges each character is one token.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(f"{symbol}</w>" for symbol in symbols)]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_inpaint_pipeline(seed: int = 0):  # -> diffusers.StableDiffusionInpaintPipeline
    """Build the tiny pipeline in memory, seeded so the weights are reproducible."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=UNET_SAMPLE_SIZE,
        in_channels=9,  # 4 noisy latents + 1 mask + 4 masked-image latents
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN_SIZE,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * VAE_SCALE_FACTOR,
        up_block_types=("UpDecoderBlock2D",) * VAE_SCALE_FACTOR,
        latent_channels=4,
        sample_size=UNET_SAMPLE_SIZE * VAE_SCALE_FACTOR,
    )
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_HIDDEN_SIZE,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def save_tiny_inpaint_pipeline(folder: Path, seed: int = 0) -> Path:
    """Write the tiny pipeline to ``folder`` (a diffusers model folder) and return it."""
    build_tiny_inpaint_pipeline(seed).save_pretrained(folder)
    return folder
