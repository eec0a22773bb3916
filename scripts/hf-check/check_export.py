# Loads a Hugging Face directory written by `rlhf checkpoint convert --to hf` with transformers
# (model in float64, tokenizer, chat template) and compares its greedy ids and log-probabilities
# with SwiftRLHF's `rlhf generate --json` output for the same prompt ids.
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
directory, ours_path = sys.argv[1], sys.argv[2]
ours = json.load(open(ours_path))
model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float64).eval()
tok = AutoTokenizer.from_pretrained(directory)
ids = list(ours["prompt_ids"])
greedy, logprobs = [], []
with torch.no_grad():
    for _ in range(len(ours["ids"])):
        logits = model(torch.tensor([ids])).logits[0, -1]
        lp = torch.log_softmax(logits, -1)
        nxt = int(torch.argmax(logits))
        greedy.append(nxt); logprobs.append(float(lp[nxt])); ids.append(nxt)
worst = max(abs(a - b) for a, b in zip(logprobs, ours["logprobs"]))
print(json.dumps({"dir": directory, "greedy_equal": greedy == ours["ids"], "tokens": len(greedy),
                  "max_logprob_diff": worst, "dtype": str(next(model.parameters()).dtype),
                  "tokenizer": type(tok).__name__, "vocab": len(tok),
                  "chat": tok.apply_chat_template([{"role": "user", "content": "Hi!"}], tokenize=False, add_generation_prompt=True),
                  "encode_hello": tok("Hello world")["input_ids"]}))
