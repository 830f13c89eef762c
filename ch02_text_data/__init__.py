"""Chapter 2, working with text data: tokenizers, sliding-window data loaders, BPE, and the download helper."""
from . import bpe as _bpe
from . import download as _download
from . import text_data as _text_data
from .bpe import (
    GPT2_PATTERN,
    BPETokenizer,
    apply_merges,
    bytes_to_unicode,
    merge_pair,
    pretokenize,
    train_bpe,
)
from .download import (
    GPT2_ENCODER_SHA256,
    GPT2_ENCODER_URL,
    GPT2_VOCAB_BPE_SHA256,
    GPT2_VOCAB_BPE_URL,
    MIRROR_ENV,
    THE_VERDICT_SHA256,
    THE_VERDICT_URL,
    DownloadError,
    download_file,
    write_atomically,
)
from .text_data import (
    END_OF_TEXT,
    TOKEN_PATTERN,
    UNK_TOKEN,
    GPTDataset,
    SimpleTokenizer,
    SimpleTokenizerWithUnk,
    build_vocab,
    create_dataloader,
    split_text,
)

__all__ = [*_text_data.__all__, *_bpe.__all__, *_download.__all__]
