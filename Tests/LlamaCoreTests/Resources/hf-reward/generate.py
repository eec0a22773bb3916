"""Two small random-weight Hugging Face reward models with the byte-level fixture's tokenizer and ChatML
template (../hf/hf-bytebpe-gqa): `llama-rm`, a LlamaForSequenceClassification (GQA, no pad id), and `qwen2-rm`,
a Qwen2ForSequenceClassification (query/key/value biases) whose pad_token_id is the newline token, so that the
score is taken at the last token that is not it, as transformers pools. The reference holds, per model, each
conversation's ids (`apply_chat_template(messages, tokenize=True)`) and transformers' float64 score (the one
logit at the pooled token): `python generate.py .` (transformers 5.x, torch) run in this folder."""
import json, os, shutil, sys
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification, Qwen2Config, Qwen2ForSequenceClassification

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "hf", "hf-bytebpe-gqa")
CONVERSATIONS = [
    [{"role": "user", "content": "Tell me a story about a fox."}, {"role": "assistant", "content": "A fox ran home through the meadow."}],
    [{"role": "user", "content": "Tell me a story about a fox."}, {"role": "assistant", "content": "No."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name an animal."}, {"role": "assistant", "content": "An owl."}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Another?"},
     {"role": "assistant", "content": "Hello again, friend.\n"}],
]

def build(kind):
    common = dict(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=2,
                  num_labels=1)
    if kind == "llama-rm":
        torch.manual_seed(21)
        return LlamaForSequenceClassification(LlamaConfig(rope_theta=500000.0, pad_token_id=None, **common))
    torch.manual_seed(22)
    return Qwen2ForSequenceClassification(Qwen2Config(rope_theta=1000000.0, pad_token_id=201, **common))

def main(out):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    reference = {"note": "transformers ForSequenceClassification in float64 on the stored weights: ids = apply_chat_template(messages, "
                         "tokenize=True), score = logits[0, 0] (pooled at the last token that is not pad_token_id)"}
    for kind in ["llama-rm", "qwen2-rm"]:
        model = build(kind)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
                else:
                    p.normal_(0, 0.3)
        directory = os.path.join(out, kind)
        shutil.rmtree(directory, ignore_errors=True)
        model.save_pretrained(directory)
        for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
            shutil.copy(os.path.join(TOKENIZER, name), directory)
        exact = type(model).from_pretrained(directory, dtype=torch.float64).eval()
        cases = []
        for messages in CONVERSATIONS:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
            with torch.no_grad():
                score = float(exact(torch.tensor([ids])).logits[0, 0])
            cases.append({"messages": messages, "ids": ids, "score": score})
        reference[kind] = cases
    with open(os.path.join(out, "reward.reference.json"), "w") as f:
        json.dump(reference, f, indent=1)

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else HERE)
