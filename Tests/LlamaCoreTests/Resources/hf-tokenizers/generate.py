# Generates small tokenizer.json files of several shapes with the `tokenizers` library, and their
# encode/decode cases, for SwiftRLHF's HuggingFaceTokenizer tests.
# Run: python generate.py [OUTDIR]  (needs `pip install tokenizers`; OUTDIR defaults to the script's folder, which
# must be Tests/LlamaCoreTests/Resources/hf-tokenizers: the fixture cases read ../hf)
import json, os, random, sys
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, normalizers, decoders, processors, Regex, AddedToken

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
os.makedirs(OUT, exist_ok=True)
rng = random.Random(1234)

CORPUS = """The quick brown fox jumps over the lazy dog. DON'T stop; we'll see what they've done, isn't it?
I'm sure you'd like it. Café, naïve, résumé, Ångström, façade — über-cool coöperation.
In 2024 there were 1234567 tokens and 3.14159 apples; call 555-0199 or +1 (800) 123-4567.
日本語のテキストも少しあります。中文也有一些。한국어 문장도 있습니다.
Emoji 😀🎉👍🏽 and family 👨‍👩‍👧 in text. Arabic: مرحبا بالعالم. Hebrew: שלום עולם.
Combining marks: e\u0301 a\u0308 o\u0302, and precomposed é ä ô. Full-width: ＡＢＣ１２３ ｶﾀｶﾅ.
Tabs\tand\tnewlines\r\nWindows lines\r\nand  multiple   spaces    here.
    Leading spaces and trailing spaces    
def main():\n    return x[0] + y['key'] * 42  # comment
Ligatures ﬁ ﬂ and superscripts x² y³, fractions ½ ¾, roman Ⅻ, circled ①②.
"""
CORPUS_LINES = [l for l in CORPUS.split("\n") if l] * 20

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3 + list("0123456789") * 2 +
        list("     ") * 4 + ["\t", "\n", "\r\n", "\r", "  ", "\u00a0", "\u3000", "\u2028", "\u0085", "\u000b"] +
        list(".,;:!?'\"-()[]{}<>/\\@#$%^&*_=+|~`") + ["'s", "'S", "'T", "'re", "'LL", "'ve", "'m", "'d", "'ſ"] +
        list("éèêëàâäôöûüçñÅåøÉ") + ["e\u0301", "a\u0308", "\u0301"] + list("日本語中文字한국어") +
        ["😀", "🎉", "👍🏽", "👨‍👩‍👧", "🇫🇷"] + list("مرحباשלום") + list("ＡＢＣ１２３ｶﾀ") + list("²³½¾Ⅻ①ﬁﬂ") +
        ["▁", "Ġ", "<0x41>", "\u200b", "\u200d", "ǅ", "ß", "İ", "Σ", "ς"])

TRICKY = ["", " ", "  ", "\n", "\r\n", "\t", " \n ", "a", " a", "a ", "  a  ", "Hello world", " Hello  world ",
          "DON'T", "don't", "I'M", "we'LL", "it'S", "'s", "''s", "x's'", "123", "1234567", "12 345", "3.14159",
          "é", "e\u0301", "naïve café", "日本語", "😀😀", "👨‍👩‍👧", "a\r\nb", "a\n\nb", "a \n b", "a\t\tb",
          "foo   bar", "foo\u00a0bar", "   leading", "trailing   ", "x\u3000y", "ﬁne", "Ⅻ", "x²", "①②", "ＡＢＣ",
          "<0x41>", "▁▁", "▁a", "Ġa", "line1\nline2\r\nline3", "   \n\n   ", "?!?!", " ... ", "a-b_c", "تست", "İstanbul",
          "Straße", "ΣΑΣ", "ǅ", "\u0301a", "a\u200bb", "$100,000.00", "x = y[0] + 42 # c", "\u0085\u000b"]


def rand_text():
    n = rng.randint(1, 25)
    return "".join(rng.choice(POOL) for _ in range(n))


def train(tok, vocab_size, special, **kw):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False, **kw)
    tok.train_from_iterator(CORPUS_LINES, trainer)
    return tok


def add_byte_fallback(tok):
    d = json.loads(tok.to_str())
    vocab = d["model"]["vocab"]
    n = max(vocab.values()) + 1
    for b in range(256):
        key = "<0x%02X>" % b
        if key not in vocab:
            vocab[key] = n
            n += 1
    d["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(d))


def patch(tok, fn):
    d = json.loads(tok.to_str())
    fn(d)
    return Tokenizer.from_str(json.dumps(d))


def special_texts(tok):
    d = json.loads(tok.to_str())
    return [t["content"] for t in d["added_tokens"]]


def cases(name, tok, tokenizer_file, extra_texts=(), n_random=50, n_decode=15):
    d = json.loads(tok.to_str())
    specials = [t["content"] for t in d["added_tokens"]]
    texts = list(TRICKY) + list(extra_texts)
    for s in specials:
        texts += [s, "a" + s + "b", " " + s + " ", s + s, "x " + s + "\n", s.upper(), "<" + s]
    for _ in range(n_random):
        t = rand_text()
        if specials and rng.random() < 0.3:
            k = rng.randint(0, len(t))
            t = t[:k] + rng.choice(specials) + rng.choice(["", " ", "  "]) + t[k:]
        texts.append(t)
    enc = []
    seen = set()
    for t in texts:
        if t in seen:
            continue
        seen.add(t)
        enc.append([t, tok.encode(t, add_special_tokens=False).ids])
    vocab_size = max(max(d["model"]["vocab"].values(), default=-1), max((t["id"] for t in d["added_tokens"]), default=-1)) + 1
    # decode cases: [encode case index or ids, skip_special_tokens, text]
    dec = []
    for i in range(0, len(enc), 3):
        for skip in (True, False):
            dec.append([i, skip, tok.decode(enc[i][1], skip_special_tokens=skip)])
    special_ids = [t["id"] for t in d["added_tokens"] if t["special"]]
    for _ in range(n_decode):
        ids = [rng.randrange(vocab_size) for _ in range(rng.randint(1, 8))]
        if special_ids and rng.random() < 0.4:
            ids.insert(rng.randint(0, len(ids)), rng.choice(special_ids))
        for skip in (True, False):
            dec.append([ids, skip, tok.decode(ids, skip_special_tokens=skip)])
    single = tok.post_processor
    pre = []; suf = []
    if single is not None:
        e = tok.encode("x", add_special_tokens=True)
        plain = tok.encode("x", add_special_tokens=False).ids
        ids = e.ids
        for i in range(len(ids) - len(plain) + 1):
            if ids[i:i + len(plain)] == plain:
                pre, suf = ids[:i], ids[i + len(plain):]
                break
    dd = d.get("decoder") or {}
    def strips(x):
        if x is None: return False
        if x["type"] == "Sequence": return any(strips(y) for y in x["decoders"])
        if x["type"] == "Strip": return x["content"] == " " and x["start"] >= 1
        if x["type"] == "Metaspace": return x.get("prepend_scheme", "always") != "never"
        return False
    out = {"tokenizer": tokenizer_file, "prefix_ids": pre, "suffix_ids": suf, "vocab_size": vocab_size,
           "special_ids": special_ids, "strips_leading_space": strips(d.get("decoder")), "encode": enc, "decode": dec}
    with open(os.path.join(OUT, name + ".cases.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))


def save(tok, name):
    # minify
    d = json.loads(tok.to_str())
    with open(os.path.join(OUT, name + ".tokenizer.json"), "w") as f:
        json.dump(d, f, ensure_ascii=False, separators=(",", ":"))
    return Tokenizer.from_file(os.path.join(OUT, name + ".tokenizer.json"))


# 1. LLaMA 3 style: Split(LLaMA3 regex) + ByteLevel(use_regex=False), ignore_merges, BOS template.
t = Tokenizer(models.BPE(ignore_merges=True))
t.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
t.decoder = decoders.ByteLevel()
train(t, 330, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t.post_processor = processors.Sequence([
    processors.ByteLevel(trim_offsets=False),
    processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                  special_tokens=[("<|begin_of_text|>", t.token_to_id("<|begin_of_text|>"))])])
t = save(t, "llama3")
cases("llama3", t, "llama3.tokenizer.json")

# 2. Qwen2 style: single-digit regex, NFC, ByteLevel decoder, merges as pairs, eos suffix template.
t = Tokenizer(models.BPE())
t.normalizer = normalizers.NFC()
t.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(QWEN2), behavior="isolated"),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
t.decoder = decoders.ByteLevel()
train(t, 320, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t.post_processor = processors.TemplateProcessing(single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", 0)])
t = save(t, "qwen2")
cases("qwen2", t, "qwen2.tokenizer.json")

# 3. Metaspace prepend_scheme first, split false, byte fallback, SentencePiece-like decoder; non-special added tokens.
t = Tokenizer(models.BPE(fuse_unk=True, unk_token="<unk>"))
t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
t.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False),
                               decoders.ByteFallback(), decoders.Fuse()])
train(t, 240, ["<unk>", "<s>", "</s>"])
t = add_byte_fallback(t)
t.add_tokens([AddedToken("<tool>", normalized=False, special=False),
              AddedToken("[MASK]", lstrip=True, rstrip=False, normalized=False, special=True)])
t.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
t = save(t, "metaspace-first")
cases("metaspace-first", t, "metaspace-first.tokenizer.json", extra_texts=["<tool>x", "a [MASK] b", "a   [MASK]b", "[MASK]"])

# 4. Metaspace prepend_scheme always, split true, unk + fuse_unk without byte fallback, NFKC normalizer,
#    added tokens with lstrip / rstrip / single_word / normalized.
t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
t.normalizer = normalizers.NFKC()
t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
t.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
train(t, 220, ["<unk>", "<pad>"], limit_alphabet=60)
t.add_tokens([AddedToken("hello", single_word=True, normalized=True),
              AddedToken("<sep>", lstrip=True, rstrip=True, normalized=False),
              AddedToken("ＵＳＥＲ", normalized=True),
              AddedToken("end", rstrip=True, normalized=False, single_word=False)])
t.add_special_tokens([AddedToken("<eos>", rstrip=True, normalized=False)])
t = save(t, "metaspace-always")
cases("metaspace-always", t, "metaspace-always.tokenizer.json",
      extra_texts=["hello", "hellox", "xhello", " hello ", "say hello.", "a<sep>b", "a   <sep>   b", "USER: hi", "ＵＳＥＲ", "the end  ", "end end", "<eos>  x"])

# 5. Metaspace no split, prepend never, unk without fuse.
t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=False))
t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="_", prepend_scheme="never", split=False)
t.decoder = decoders.Metaspace(replacement="_", prepend_scheme="never", split=False)
train(t, 200, ["<unk>"], limit_alphabet=40)
t = save(t, "metaspace-never")
cases("metaspace-never", t, "metaspace-never.tokenizer.json")

# 6. NFKC + Lowercase + Digits(individual) + ByteLevel(add_prefix_space) with its regex; Strip normalizer.
t = Tokenizer(models.BPE())
t.normalizer = normalizers.Sequence([normalizers.Strip(left=True, right=False), normalizers.NFKC(), normalizers.Lowercase()])
t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                           pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
t.decoder = decoders.ByteLevel()
train(t, 320, ["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t.post_processor = processors.ByteLevel(trim_offsets=True)
t = save(t, "nfkc-digits")
cases("nfkc-digits", t, "nfkc-digits.tokenizer.json")

# 7. Split behaviours (literal and generic regexes, invert), Digits contiguous, Punctuation, WhitespaceSplit,
#    Replace normalizer with a regex, continuing subword prefix / end of word suffix, unk.
SPLITS = {
    "split-a": [pre_tokenizers.Split("-", behavior="merged_with_next"),
                pre_tokenizers.Split(Regex(r"[,.;:!?]"), behavior="merged_with_previous"),
                pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
                pre_tokenizers.Digits(individual_digits=False)],
    "split-b": [pre_tokenizers.Split(Regex(r"\p{L}+"), behavior="isolated", invert=True),
                pre_tokenizers.Split(Regex(r"\d"), behavior="contiguous"),
                pre_tokenizers.Punctuation(behavior="isolated"),
                pre_tokenizers.WhitespaceSplit()],
}
for name, seq in SPLITS.items():
    t = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    t.normalizer = normalizers.Sequence([normalizers.Replace(Regex(r"[\t ]{2,}"), " "), normalizers.Replace("é", "e")])
    t.pre_tokenizer = pre_tokenizers.Sequence(seq)
    t.decoder = decoders.Sequence([decoders.Replace("</w>", " "), decoders.Replace("##", ""), decoders.Strip(" ", 0, 1)])
    train(t, 200, ["[UNK]"], limit_alphabet=50, continuing_subword_prefix="##", end_of_word_suffix="</w>")
    t = save(t, name)
    cases(name, t, name + ".tokenizer.json", extra_texts=["a-b-c", "x, y. z!", "--a", "a--", "1,000.5", "é-é", "w\u00e9"])

# 8. LLaMA 2 legacy style (Prepend + Replace normalizer, byte fallback, Replace/ByteFallback/Fuse/Strip decoder),
#    with a normalized added token (matched after the Prepend).
t = Tokenizer(models.BPE(fuse_unk=True, byte_fallback=True))
t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
train(t, 200, ["<unk>", "<s>", "</s>"])
t = add_byte_fallback(t)
t.add_tokens([AddedToken("Hello", normalized=True), AddedToken("<|x|>", normalized=False)])
t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
t = save(t, "llama2-legacy")
cases("llama2-legacy", t, "llama2-legacy.tokenizer.json", extra_texts=["Hello", " Hello", "Hello Hello", "say Hello<|x|>Hello"])

# 9. The fixture tokenizers on more strings.
for fixture in ["hf-llama2-mha", "hf-bytebpe-gqa"]:
    path = os.path.join(OUT, "..", "hf", fixture, "tokenizer.json")
    t = Tokenizer.from_file(path)
    cases("fixture-" + fixture, t, "../hf/" + fixture + "/tokenizer.json", n_random=80, n_decode=20)

# 10. StripAccents after NFD: every combining mark goes (Mn, Mc and Me), over a byte-level model that can
#     spell whatever is left.
t = Tokenizer(models.BPE())
t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
t.decoder = decoders.ByteLevel()
train(t, 300, [], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t = save(t, "strip-accents")
cases("strip-accents", t, "strip-accents.tokenizer.json",
      extra_texts=["\u20dd", "a\u20ddb", "\u0940", "\u0903", "\u0915\u093f\u0903", "Crème Brûlée", "e\u0301\u0903\u20dd!"])

# 11. Oniguruma's meanings where Swift Regex's differ: \w (Alphabetic, marks, Nd, Pc and Latin-1's ²³¹¼½¾, not
#     other numbers), \h (a hexadecimal digit), . (anything but \n) and $ (before \n or at the end).
t = Tokenizer(models.BPE())
t.normalizer = normalizers.Replace(Regex(r"[ \t]+$"), "")
t.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(r"\h{2,}|\w+|.{1,3}"), behavior="isolated"),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
t.decoder = decoders.ByteLevel()
train(t, 300, [], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t = save(t, "regex-oniguruma")
cases("regex-oniguruma", t, "regex-oniguruma.tokenizer.json",
      extra_texts=["x\u00b2 \u00bd \u2160 \u2460 \u216b", "deadBEEF cafe 12ab", "a\u000bb\rc\u0085d\ne", "end  \nnext \t\nlast  ",
                   "\u2028x\u2029y"])

# 12. Gemma's (transformers' GemmaConverter): spaces replaced by "▁" with no prefix added, a Split on " " that the
#     replacement leaves nothing to split, byte fallback, a Replace/ByteFallback/Fuse decoder that strips nothing, and
#     the chat template's turn markers as special tokens.
t = Tokenizer(models.BPE(fuse_unk=True, byte_fallback=True, unk_token="<unk>"))
t.normalizer = normalizers.Replace(" ", "▁")
t.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
train(t, 220, ["<pad>", "<eos>", "<bos>", "<unk>"])
t = add_byte_fallback(t)
t.add_special_tokens([AddedToken("<start_of_turn>", normalized=False), AddedToken("<end_of_turn>", normalized=False)])
t.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
t = save(t, "gemma")
cases("gemma", t, "gemma.tokenizer.json",
      extra_texts=["<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n", " leading", "trailing ", "a  b"])

with open(os.path.join(OUT, "README.md"), "w") as f:
    f.write("Small tokenizer.json files and their encode/decode cases, made by the Python `tokenizers` library "
            "(version %s) with `python generate.py .` run in this folder (trained on the paragraphs in the script); the "
            "`fixture-*` cases run the tokenizers in `../hf` on more strings.\n" % __import__("tokenizers").__version__)
print("done")
