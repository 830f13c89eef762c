"""The tokenizers of Llama 3 and Qwen3 in the course's own byte-level BPE, and their chat templates.

Hand-written infrastructure (not generated from a notebook). The lesson is chapter 2's BPE
(`ch02_text_data.bpe.BPETokenizer`); Llama 3 and Qwen3 tokenize the same way GPT-2 does: UTF-8 bytes, a
regex pre-tokenizer that cuts the text into pieces, then merges ranked best first inside each piece.
What changes:

- The pre-tokenizer regex. Both split a letter run together with one leading non-letter (" hello",
  "(hello"), keep line breaks apart from the text around them and match "'s", "'LL" in any case. Qwen2/Qwen3
  split digits one by one (`\\p{N}`), Llama 3 in groups of up to three (`\\p{N}{1,3}`): "12345" is five
  pieces for Qwen, "123" + "45" for Llama.
- Qwen normalises the text to Unicode NFC first, so "e" + a combining acute accent becomes "é". (Python's
  unicodedata and `tokenizers` may carry different Unicode versions: characters newer than one of the two
  can normalise differently.)
- The vocabularies are bigger (128,000 ordinary tokens for Llama 3, 151,643 for Qwen3) and come with
  special tokens that mark chat turns.

Two file formats hold them. Hugging Face's `tokenizer.json` (both models ship one) has the vocabulary
(token -> id), the merges, the normaliser, the pre-tokenizer regex and the added tokens; `load_tokenizer_json`
reads it. Meta's `original/tokenizer.model` for Llama 3 is tiktoken's format, one "base64(token bytes) rank"
line per token and no merges: tiktoken merges the neighbouring pair whose joined bytes have the lowest rank.
`load_tiktoken_file` gives a tiktoken.Encoding; `bpe_from_tiktoken_file` recovers the merges (each token
is the one merge that BPE, restricted to lower ranks, makes of its bytes) and builds the course BPE.

Special and non-special added tokens. `tokenizers` (the Rust library behind transformers) matches every
added token wherever it appears in the text. The course keeps tiktoken's stricter rule for *special*
tokens: `encode_ordinary` never produces a special id and `encode` only where allowed, so a user who types
"<|im_end|>" into a chat cannot end the turn. Qwen3 also has added tokens that are *not* special: "<think>"
(151667), "</think>" (151668), "<tool_call>", ... They are ordinary vocabulary entries, and the model was
trained on them wherever they occur, so `ModernBPETokenizer` matches them in every text, as `tokenizers`
does: "<think>" gives id 151667 in `encode_ordinary` too, and the Qwen3 template writes its empty thinking
block as the text "<think>\\n\\n</think>\\n\\n", which the tokenizer turns into the same ids as the reference.

Chat templates are written out by hand (no jinja). The text between two special tokens is encoded as one
string, as the reference tokenizer sees the rendered template: "\\n\\n" + content is one stretch of text in
Llama 3's format, "user\\n" + content in Qwen3's. Not reproduced: tool calls and images, and the system turn
that the Llama 3.1/3.2 Instruct template writes when a conversation has none ("Cutting Knowledge Date: ...
Today Date: ..."): `llama3_chat_ids` writes only the messages it is given.

    tokenizer = load_modern_tokenizer("checkpoints/Qwen3-0.6B")
    ids = qwen3_chat_ids(tokenizer, [{"role": "user", "content": "Hi!"}], enable_thinking=False)
    tokenizer.decode(ids)  # '<|im_start|>user\\nHi!<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n'
"""
from __future__ import annotations

import base64
import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import regex
import tiktoken

from ch02_text_data.bpe import GPT2_PATTERN, BPETokenizer, apply_merges, bytes_to_unicode

__all__ = [
    "QWEN2_PATTERN",
    "LLAMA3_PATTERN",
    "ModernBPETokenizer",
    "split_isolated",
    "load_tokenizer_json",
    "load_modern_tokenizer",
    "llama3_special_tokens",
    "load_tiktoken_file",
    "bpe_from_tiktoken_file",
    "llama3_chat_ids",
    "qwen3_chat_ids",
    "CHAT_FORMATS",
    "stop_token_ids",
]

# The published pre-tokenizer regexes (the Split pattern of each model's tokenizer.json). They differ
# only in the digits: Qwen2/Qwen3 `\p{N}` (one digit a piece), Llama 3 `\p{N}{1,3}` (up to three).
QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

LLAMA3_FIRST_SPECIAL_ID = 128_000  # Llama 3's 128,000 ordinary tokens come first, then 256 special ones


def split_isolated(pattern: regex.Pattern, text: str) -> list[str]:
    """Cut text as tokenizers' Split(behavior="isolated") does: every match, and every gap between matches."""
    pieces, start = [], 0
    for match in pattern.finditer(text):
        if match.start() > start:
            pieces.append(text[start:match.start()])
        if match.end() > match.start():
            pieces.append(match.group())
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


class ModernBPETokenizer(BPETokenizer):
    """BPETokenizer plus what tokenizer.json files add: NFC, whole-piece lookup, non-special added tokens."""

    def __init__(
        self,
        encoder: dict[str, int],
        merges: list[tuple[str, str]],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
        added_tokens: dict[str, int] | None = None,
        normalizer: str | None = None,
        ignore_merges: bool = False,
    ) -> None:
        super().__init__(encoder, merges, special_tokens, pattern)
        if normalizer not in (None, "NFC"):
            raise ValueError(f"normalizer must be None or 'NFC', got {normalizer!r}")
        self.normalizer = normalizer
        self.ignore_merges = ignore_merges  # a piece that is a whole token skips the merges (tiktoken does so too)
        self.added_tokens = dict(added_tokens or {})  # non-special added tokens: text -> id, matched in any text
        clash = sorted(set(self.added_tokens.values()) & (set(self.encoder.values()) | set(self.special_tokens.values())))
        if clash:
            raise ValueError(f"added-token ids must differ from the other ids; {clash[:3]} are taken")
        both = sorted(set(self.added_tokens) & set(self.special_tokens))
        if both:
            raise ValueError(f"{both[0]!r} is both a special token and a non-special added token")
        self.id_to_bytes.update({i: token.encode("utf-8") for token, i in self.added_tokens.items()})
        longest_first = sorted(self.added_tokens, key=len, reverse=True)  # leftmost-longest match, as tokenizers
        self.added_splitter = regex.compile("(" + "|".join(map(regex.escape, longest_first)) + ")") if longest_first else None

    @property
    def vocab_size(self) -> int:
        """Number of token ids: ordinary, special and non-special added tokens."""
        return len(self.encoder) + len(self.special_tokens) + len(self.added_tokens)

    def normalize(self, text: str) -> str:
        """The text as the model's normaliser leaves it (NFC for Qwen, unchanged for Llama 3)."""
        return unicodedata.normalize("NFC", text) if self.normalizer == "NFC" else text

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids for text: added non-special tokens by id, the rest normalised and BPE-encoded; no specials."""
        if self.added_splitter is None:
            return super().encode_ordinary(self.normalize(text))
        ids: list[int] = []
        for i, part in enumerate(self.added_splitter.split(text)):  # odd positions hold the added tokens
            if i % 2:
                ids.append(self.added_tokens[part])
            elif part:
                ids.extend(super().encode_ordinary(self.normalize(part)))
        return ids

    def _encode_pieces(self, text: str) -> list[int]:
        """Pre-tokenize (keeping any gap between matches), then merge each piece, cached per distinct piece."""
        ids: list[int] = []
        for piece in split_isolated(self.pattern, text):
            piece_ids = self.cache.get(piece)
            if piece_ids is None:
                symbols = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                if self.ignore_merges and symbols in self.encoder:
                    piece_ids = [self.encoder[symbols]]
                else:
                    piece_ids = [self.encoder[s] for s in apply_merges(list(symbols), self.ranks)]
                self.cache[piece] = piece_ids
            ids.extend(piece_ids)
        return ids

    def save(self, folder: str | Path) -> None:
        """Not available: GPT-2's two files cannot hold a regex, a normaliser or added tokens."""
        raise ValueError("a ModernBPETokenizer cannot be saved in GPT-2's format; keep the tokenizer.json it came from")


# --- tokenizer.json ---------------------------------------------------------------------------------------


def _normalizer(spec: dict | None, unsupported: Callable[[str, object], ValueError]) -> str | None:
    """'NFC' or None from tokenizer.json's normalizer field (also an NFC-only Sequence)."""
    if spec is None:
        return None
    if spec.get("type") == "Sequence" and [n.get("type") for n in spec.get("normalizers", [])] == ["NFC"]:
        return "NFC"
    if spec.get("type") == "NFC":
        return "NFC"
    raise unsupported("normalizer", spec.get("type"))


def _pre_tokenizer_pattern(spec: dict | None, unsupported: Callable[[str, object], ValueError]) -> str:
    """The regex of a byte-level pre-tokenizer: ByteLevel(use_regex) alone, or Split(regex) + ByteLevel."""
    def byte_level(step: dict, use_regex: bool) -> None:
        if step.get("type") != "ByteLevel":
            raise unsupported("pre_tokenizer", step.get("type"))
        if step.get("add_prefix_space", False):
            raise unsupported("pre_tokenizer add_prefix_space", True)
        if step.get("use_regex", True) != use_regex:
            raise unsupported("pre_tokenizer ByteLevel use_regex", step.get("use_regex", True))

    if spec is None:
        raise unsupported("pre_tokenizer", None)
    if spec.get("type") == "ByteLevel":  # GPT-2's files: ByteLevel applies GPT-2's regex itself
        byte_level(spec, use_regex=True)
        return GPT2_PATTERN
    steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]
    kinds = [step.get("type") for step in steps]
    if kinds != ["Split", "ByteLevel"]:  # Qwen2/3 and Llama 3: Sequence[Split(regex), ByteLevel(use_regex=False)]
        raise unsupported("pre_tokenizer", " + ".join(map(str, kinds)))
    split = steps[0]
    if "Regex" not in split.get("pattern", {}):
        raise unsupported("pre_tokenizer Split pattern", split.get("pattern"))
    if split.get("behavior") != "Isolated" or split.get("invert", False):
        raise unsupported("pre_tokenizer Split behavior", f"{split.get('behavior')}, invert={split.get('invert')}")
    byte_level(steps[1], use_regex=False)
    return split["pattern"]["Regex"]


def load_tokenizer_json(path: str | Path) -> ModernBPETokenizer:
    """Read a Hugging Face tokenizer.json of a byte-level BPE model (Llama 3, Qwen2/Qwen3, GPT-2)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file {str(path)!r}: expected the tokenizer.json from the model's "
                                "folder on the Hugging Face Hub")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None

    def unsupported(field: str, value: object) -> ValueError:
        return ValueError(f"{path}: unsupported {field} {value!r}; load_tokenizer_json reads byte-level BPE "
                          "tokenizers such as Llama 3's, Qwen3's and GPT-2's")

    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise unsupported("model.type", model.get("type") if isinstance(model, dict) else model)
    for field, fine in (("dropout", (None, 0, 0.0)), ("continuing_subword_prefix", (None, "")),
                        ("end_of_word_suffix", (None, "")), ("byte_fallback", (None, False))):
        if model.get(field) not in fine:
            raise unsupported(f"model.{field}", model[field])
    normalizer = _normalizer(spec.get("normalizer"), unsupported)
    pattern = _pre_tokenizer_pattern(spec.get("pre_tokenizer"), unsupported)
    decoder = spec.get("decoder")
    if decoder is None or decoder.get("type") != "ByteLevel":
        raise unsupported("decoder", decoder and decoder.get("type"))
    # post_processor is left out on purpose: Llama 3's adds <|begin_of_text|>, which the chat templates write.

    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(type(i) is int for i in vocab.values()):
        raise ValueError(f"{path}: model.vocab must map token strings to integer ids")
    merges = []
    for n, merge in enumerate(model.get("merges", [])):
        pair = tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge)  # "a b" (old files) or [a, b]
        if len(pair) != 2 or not all(isinstance(s, str) for s in pair):
            raise ValueError(f"{path}: model.merges[{n}] must be 'a b' or [a, b], got {merge!r}")
        merges.append(pair)

    specials, added = {}, {}
    for token in spec.get("added_tokens", []):
        content, token_id, special = token["content"], token["id"], token.get("special", False)
        for flag in ("single_word", "lstrip", "rstrip"):
            if token.get(flag, False):
                raise unsupported(f"added token {content!r} {flag}", True)
        if normalizer and token.get("normalized", not special):  # matched after NFC: not implemented
            raise unsupported(f"added token {content!r} normalized", True)
        (specials if special else added)[content] = token_id
    taken = {*specials.values(), *added.values()}
    encoder = {token: i for token, i in vocab.items() if i not in taken and token not in specials and token not in added}

    byte_chars = set(bytes_to_unicode().values())
    missing = sorted(byte_chars - set(encoder))
    if missing:
        raise ValueError(f"{path}: model.vocab lacks {len(missing)} of the 256 byte tokens (e.g. {missing[0]!r}); "
                         "not a byte-level BPE vocabulary")
    foreign = next((token for token in encoder if not set(token) <= byte_chars), None)
    if foreign is not None:
        raise ValueError(f"{path}: model.vocab holds {foreign!r}, which is not written in byte-level characters")
    unknown = next((pair for pair in merges if pair[0] + pair[1] not in encoder), None)
    if unknown is not None:
        raise ValueError(f"{path}: the merge {unknown!r} makes a token that model.vocab does not have")
    return ModernBPETokenizer(encoder, merges, specials, pattern, added_tokens=added, normalizer=normalizer,
                              ignore_merges=bool(model.get("ignore_merges", False)))


def load_modern_tokenizer(folder: str | Path) -> ModernBPETokenizer:
    """The tokenizer of a Hugging Face checkpoint folder (its tokenizer.json)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder {str(folder)!r}: download the checkpoint first")
    path = folder / "tokenizer.json"
    if not path.is_file():
        hint = (" (it has Meta's original/tokenizer.model: bpe_from_tiktoken_file reads that one)"
                if (folder / "original" / "tokenizer.model").is_file() else "")
        raise FileNotFoundError(f"{str(folder)!r} has no tokenizer.json{hint}; download tokenizer.json from "
                                "the model's page on the Hugging Face Hub into that folder")
    return load_tokenizer_json(path)


# --- Llama 3's tiktoken file --------------------------------------------------------------------------------


def llama3_special_tokens() -> dict[str, int]:
    """Llama 3.1/3.2's 256 special tokens, ids 128000-128255 (8 named, the other 248 reserved, numbered 0-247)."""
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>", 6: "<|start_header_id|>",
             7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>", 10: "<|python_tag|>"}
    specials, n_reserved = {}, 0
    for offset in range(256):
        if offset in named:
            token = named[offset]
        else:
            token, n_reserved = f"<|reserved_special_token_{n_reserved}|>", n_reserved + 1
        specials[token] = LLAMA3_FIRST_SPECIAL_ID + offset
    return specials


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """token bytes -> rank, from tiktoken's format: one 'base64(token) rank' line per token."""
    if not path.is_file():
        raise FileNotFoundError(f"no tiktoken file {str(path)!r}: expected Llama 3's original/tokenizer.model "
                                "from the model's page on the Hugging Face Hub")
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            encoded, rank_text = line.split()
            token, rank = base64.b64decode(encoded, validate=True), int(rank_text)
        except ValueError:  # wrong field count, bad base64 (binascii.Error is a ValueError) or a bad rank
            raise ValueError(f"{path}, line {n}: expected 'base64-token rank', got {line[:60]!r}") from None
        if token in ranks:
            raise ValueError(f"{path}, line {n}: the token {token!r} appears twice")
        ranks[token] = rank
    if not ranks:
        raise ValueError(f"{path}: no tokens; expected one 'base64-token rank' line per token")
    if len(set(ranks.values())) != len(ranks):
        raise ValueError(f"{path}: two tokens share a rank; every token needs its own")
    return ranks


def _place_specials(path: Path, ranks: dict[bytes, int],
                    special_tokens: Mapping[str, int] | Iterable[str] | None) -> dict[str, int]:
    """Special token -> id: a mapping as given; names (Llama 3's by default) numbered after the last rank."""
    if isinstance(special_tokens, Mapping):
        specials = dict(special_tokens)
    else:
        names = llama3_special_tokens() if special_tokens is None else special_tokens
        first = max(ranks.values()) + 1  # 128000 for Llama 3's file, so its specials get their published ids
        specials = {name: first + i for i, name in enumerate(dict.fromkeys(names))}
    clash = sorted(set(specials.values()) & set(ranks.values()))
    if clash:
        raise ValueError(f"{path}: special-token ids {clash[:3]} are ranks of ordinary tokens already")
    return specials


def load_tiktoken_file(
    path: str | Path,
    pattern: str = LLAMA3_PATTERN,
    special_tokens: Mapping[str, int] | Iterable[str] | None = None,
) -> tiktoken.Encoding:
    """A tiktoken.Encoding from a tiktoken-format file; special names go after the last rank (Llama 3's by default)."""
    path = Path(path)
    ranks = _read_tiktoken_ranks(path)
    specials = _place_specials(path, ranks, special_tokens)
    return tiktoken.Encoding(name=path.name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)


def bpe_from_tiktoken_file(
    path: str | Path,
    pattern: str = LLAMA3_PATTERN,
    special_tokens: Mapping[str, int] | Iterable[str] | None = None,
) -> ModernBPETokenizer:
    """The course BPE from a tiktoken-format file: ids are the ranks, each token's merge is recovered from its bytes."""
    path = Path(path)
    ranks = _read_tiktoken_ranks(path)
    specials = _place_specials(path, ranks, special_tokens)
    byte_encoder = bytes_to_unicode()
    singles = {token[0] for token in ranks if len(token) == 1}
    if len(singles) != 256:
        raise ValueError(f"{path}: {256 - len(singles)} of the 256 single bytes have no rank; "
                         "not a byte-level BPE file")
    # Tiktoken merges the neighbouring pair whose joined bytes rank lowest. Run that on each token's own
    # bytes with the merges of the lower-ranked tokens only: what is left must be two parts, and joining
    # them is the token's merge. Merges sorted by the rank of their token make the course BPE choose as
    # tiktoken does.
    merges: list[tuple[str, str]] = []
    merge_ranks: dict[tuple[str, str], int] = {}
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = apply_merges([byte_encoder[b] for b in token], merge_ranks)
        if len(parts) != 2:
            raise ValueError(f"{path}: the token {token!r} (rank {rank}) is not one merge of two lower-ranked "
                             f"tokens (BPE leaves {len(parts)} parts); load it with load_tiktoken_file instead")
        merge_ranks[(parts[0], parts[1])] = len(merges)
        merges.append((parts[0], parts[1]))
    encoder = {"".join(byte_encoder[b] for b in token): rank for token, rank in ranks.items()}
    return ModernBPETokenizer(encoder, merges, specials, pattern, ignore_merges=True)


# --- chat templates ---------------------------------------------------------------------------------------

ROLES = ("system", "user", "assistant")


def _check_messages(messages: list[dict[str, str]]) -> None:
    """Raise ValueError unless messages is a list of {"role": system|user|assistant, "content": str}."""
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {message!r}")
        if message["role"] not in ROLES:
            raise ValueError(f"message {i} has the role {message['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(message["content"], str):
            raise ValueError(f"message {i}: content must be a str, got {type(message['content']).__name__}")


def _special_id(tokenizer: BPETokenizer, token: str, chat_format: str) -> int:
    """The id of a special token the chat format needs; a clear error if the tokenizer lacks it."""
    if token not in tokenizer.special_tokens:
        raise ValueError(f"this tokenizer has no special token {token!r}, which the {chat_format} chat format needs: "
                         "load the model's own tokenizer.json")
    return tokenizer.special_tokens[token]


def _encode_template(tokenizer: BPETokenizer, parts: list[int | str]) -> list[int]:
    """Ids of a template: ints are special-token ids, each str (all the text between two of them) is encoded."""
    ids: list[int] = []
    for part in parts:
        if isinstance(part, str):
            ids.extend(tokenizer.encode_ordinary(part))  # ordinary: a typed "<|eot_id|>" stays text
        else:
            ids.append(part)
    return ids


def llama3_chat_ids(tokenizer: BPETokenizer, messages: list[dict[str, str]],
                    add_generation_prompt: bool = True) -> list[int]:
    """Llama 3's chat format: <|begin_of_text|>, then <|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|> per message."""
    _check_messages(messages)
    bos, start, end, eot = (_special_id(tokenizer, t, "Llama 3") for t in
                            ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    parts: list[int | str] = [bos]
    for message in messages:  # the published template trims each content (jinja's `| trim`)
        parts += [start, message["role"], end, "\n\n" + message["content"].strip(), eot]
    if add_generation_prompt:
        parts += [start, "assistant", end, "\n\n"]
    return _encode_template(tokenizer, parts)


def qwen3_chat_ids(tokenizer: BPETokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                   enable_thinking: bool = True) -> list[int]:
    """Qwen3's chat format (ChatML): <|im_start|>role\\ncontent<|im_end|>\\n per message, thinking as Qwen3 writes it."""
    _check_messages(messages)
    start, end = (_special_id(tokenizer, t, "Qwen3") for t in ("<|im_start|>", "<|im_end|>"))
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
    parts: list[int | str] = []
    for i, message in enumerate(messages):
        content = message["content"]
        if message["role"] == "assistant":  # as Qwen3's template: earlier answers lose their thinking
            reasoning = ""
            if "</think>" in content:
                reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
            if i > last_user and (i == len(messages) - 1 or reasoning):  # answers after the last question keep it
                content = "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n")
        parts += [start, message["role"] + "\n" + content, end, "\n"]
    if add_generation_prompt:  # enable_thinking=False: an empty thinking block tells Qwen3 to answer at once
        parts += [start, "assistant\n" + ("" if enable_thinking else "<think>\n\n</think>\n\n")]
    return _encode_template(tokenizer, parts)


# config.json's model_type -> the chat format of that family
CHAT_FORMATS: dict[str, Callable[..., list[int]]] = {"llama": llama3_chat_ids, "qwen3": qwen3_chat_ids}

STOP_TOKENS = {"llama": ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"), "qwen3": ("<|im_end|>", "<|endoftext|>")}


def stop_token_ids(tokenizer: BPETokenizer, model_type: str) -> list[int]:
    """Ids that end a chat reply for config.json's model_type ("llama" or "qwen3"), those the tokenizer has."""
    if model_type not in STOP_TOKENS:
        raise ValueError(f"no chat format for model_type {model_type!r}; supported: {', '.join(STOP_TOKENS)}")
    ids = [tokenizer.special_tokens[t] for t in STOP_TOKENS[model_type] if t in tokenizer.special_tokens]
    if not ids:
        raise ValueError(f"this tokenizer has none of the stop tokens of {model_type!r} ({', '.join(STOP_TOKENS[model_type])}): "
                         "load the model's own tokenizer.json")
    return ids
