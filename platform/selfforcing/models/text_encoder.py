"""UMT5 text encoder with Wan's conventions: fixed-length tokens, padding positions zeroed.

Wan2.1 encodes a prompt with UMT5-XXL to at most ``text_len`` (512) tokens, keeps only the first
``seq_len`` output vectors (the prompt's tokens plus EOS) and zero-pads to ``text_len``. The DiT's
cross-attention then attends to all ``text_len`` positions, zeros included; the released weights were
trained that way, so ``encode`` reproduces it exactly.

Two sources, one code path (a transformers model + a transformers fast tokenizer):
- ``TextEncoderConfig.path`` set: a local directory in transformers layout (no hub access).
- ``path`` unset: a random-weight UMT5 of the config's sizes and a word-level tokenizer built locally with
  the ``tokenizers`` library. The weights are seeded, so every process builds the same encoder and tiny
  pipelines are reproducible across workers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..config.schema import TextEncoderConfig

PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "</s>", "<unk>"
# T5's convention: pad 0, eos 1, unk 2; the UMT5 config below relies on pad = 0.
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)

# A small built-in vocabulary for random-weight encoders: enough common words that toy prompts tokenize
# to distinct ids instead of a sequence of <unk>s.
_BUILTIN_WORDS = """
a an the this that these those it its of in on at to from by with without for and or but not no yes
is are was were be been being has have had do does did can could will would should may might must
i you he she we they me him her us them my your his our their what which who whom whose where when why how
all any some many much more most few less least each every both either neither other another such same
one two three four five six seven eight nine ten first second third last next new old young big small
large little long short tall high low wide narrow deep shallow thick thin heavy light fast slow quick
early late good bad great best better worse worst beautiful pretty ugly clean dirty bright dark dim
hot cold warm cool wet dry soft hard smooth rough loud quiet calm happy sad angry scared tired busy
red orange yellow green blue purple pink brown black white gray grey gold golden silver colorful
man woman boy girl child children baby person people family friend crowd dancer chef farmer teacher
dog cat bird fish horse cow sheep pig rabbit bear lion tiger elephant monkey fox wolf deer duck owl
tree trees flower flowers grass leaf leaves forest garden park field farm mountain mountains hill
river lake sea ocean beach wave waves island desert valley sky cloud clouds sun moon star stars
rain snow wind storm fog sunset sunrise night day morning evening afternoon winter summer spring autumn
city town street road bridge building house home room kitchen window door wall floor roof table chair
bed car cars bus train truck bike bicycle boat ship plane airplane rocket robot machine computer phone
ball box cup bottle book paper camera light lights lamp fire smoke water ice stone rock sand glass
food bread fruit apple orange banana cake coffee tea wine soup pizza
walk walks walking run runs running jump jumps jumping fly flies flying swim swims swimming dance
dances dancing sing sings singing play plays playing eat eats eating drink drinks drinking sit sits
sitting stand stands standing look looks looking watch watches watching move moves moving turn turns
turning fall falls falling rise rises rising roll rolls rolling spin spins spinning open opens close
closes hold holds holding throw throws catch catches ride rides riding drive drives driving cook cooks
cooking read reads reading write writes writing smile smiles smiling laugh laughs laughing cry
shot view camera scene close-up closeup slow-motion motion zoom pan panning tracking aerial wide-angle
cinematic realistic photorealistic detailed style video film footage background foreground lighting
shadow shadows reflection color colors texture square circle triangle shape shapes object objects
left right up down over under above below between through across around behind front inside outside
near far toward towards into onto along against
""".split()


def builtin_vocabulary() -> list[str]:
    """The built-in word list (deduplicated, order kept) used when ``TextEncoderConfig.vocab`` is None."""
    return list(dict.fromkeys(_BUILTIN_WORDS))


def clean_prompt(text: str) -> str:
    """Wan's ``clean='whitespace'``: unescape HTML entities and collapse runs of whitespace.

    Wan also runs ``ftfy.fix_text`` (mojibake repair); it is applied when ftfy is installed.
    """
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def build_word_tokenizer(words: Sequence[str]):
    """A T5-style tokenizer over a word list: NFKC + lowercase, split on whitespace and punctuation,
    unknown words -> ``<unk>``, ``</s>`` appended; pad id 0, eos id 1, unk id 2.

    Returned as a transformers ``PreTrainedTokenizerFast`` so real and tiny tokenizers share a code path
    (padding, truncation, ``save_pretrained``).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        word = word.lower()
        if word and word not in vocab:
            vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, vocab[EOS_TOKEN])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, unk_token=UNK_TOKEN
    )


def random_umt5(cfg: TextEncoderConfig, vocab_size: int, seed: int = 0) -> nn.Module:
    """A UMT5 encoder of the config's sizes with seeded random weights (identical in every process)."""
    from transformers import UMT5Config, UMT5EncoderModel

    if cfg.d_model % cfg.num_heads:
        raise ValueError(
            f"text_encoder.d_model={cfg.d_model} must be divisible by text_encoder.num_heads={cfg.num_heads}"
        )
    config = UMT5Config(
        vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_model // cfg.num_heads, d_ff=cfg.d_ff,
        num_layers=cfg.num_layers, num_heads=cfg.num_heads, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UMT5EncoderModel(config)


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56; load directly in the target dtype (a
    UMT5-XXL encoder is ~23 GB in float32) under either name."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}


class TextEncoder(nn.Module):
    """Prompts -> text embeddings [B, max_length, d_model] for the DiT's cross-attention."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)  # frozen: nothing trains the text encoder
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_config(
        cls,
        cfg: TextEncoderConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> TextEncoder:
        """Load ``cfg.path`` (transformers layout, local files only) or build a seeded random encoder."""
        if cfg.path is not None:
            from transformers import AutoTokenizer, UMT5EncoderModel

            path = Path(cfg.path)
            if not path.is_dir():
                raise FileNotFoundError(f"text_encoder.path={cfg.path!r} is not a local directory")
            model = UMT5EncoderModel.from_pretrained(str(path), local_files_only=True, **_dtype_kwarg(dtype))
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        else:
            tokenizer = build_word_tokenizer(cfg.vocab if cfg.vocab is not None else builtin_vocabulary())
            model = random_umt5(cfg, vocab_size=len(tokenizer), seed=seed)
        return cls(model, tokenizer, cfg.max_length).to(device=device, dtype=dtype)

    @property
    def d_model(self) -> int:
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), each [B, max_length] int64, on the encoder's device.

        Prompts longer than ``max_length`` are truncated (EOS kept last, as Wan's tokenizer does).
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, got a single str; wrap it in a list")
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts], padding="max_length", truncation=True,
            max_length=self.max_length, add_special_tokens=True, return_tensors="pt",
        )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embeddings [B, max_length, d_model] in the encoder's dtype.

        Like Wan's T5 wrapper: tokenize to ``max_length`` with padding and truncation, run the encoder
        with the attention mask, then set every position past each prompt's length (its tokens + EOS)
        to exactly zero. Wan keeps only the first ``seq_len`` vectors and zero-pads; the encoder's outputs
        at padding positions are not zero, and the DiT (which attends to padding) was trained on zeros.
        """
        ids, mask = self.tokenize(prompts)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden * mask[..., None].to(hidden.dtype)

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encode(prompts)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write model and tokenizer in transformers layout; ``TextEncoderConfig(path=...)`` loads it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        return path
