"""A small random-weight SmolLM3ForCausalLM directory (LLaMA's decoder with no RoPE in every second layer here,
`no_rope_layer_interval` 2 over 4 layers; grouped-query attention, tied embeddings, its RoPE base 2e6 left to the
config's default) with transformers' float64 outputs on the stored weights: greedy ids and logits, and the masked
next-token cross-entropy of two sequences with its gradient for every attention tensor (names as the file spells
them, rows in its order): `python generate.py .` (transformers 5.x, torch) run in this folder."""
import json, os, shutil, sys
import torch
from transformers import SmolLM3Config, SmolLM3ForCausalLM

def main(out):
    torch.manual_seed(13)
    config = SmolLM3Config(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                           tie_word_embeddings=True, no_rope_layer_interval=2)
    model = SmolLM3ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.3)
    directory = os.path.join(out, "smollm3-nope")
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    # The saved config keeps the list; drop it (and the base) so the reader derives both as transformers does.
    path = os.path.join(directory, "config.json")
    saved = json.load(open(path))
    assert saved["no_rope_layers"] == [1, 0, 1, 0], saved["no_rope_layers"]
    del saved["no_rope_layers"]
    saved.pop("rope_parameters", None); saved.pop("rope_theta", None)
    json.dump(saved, open(path, "w"), indent=2)
    exact = SmolLM3ForCausalLM.from_pretrained(directory, dtype=torch.float64).eval()
    assert exact.config.no_rope_layers == [1, 0, 1, 0] and exact.config.rope_parameters["rope_theta"] == 2e6
    g = torch.Generator().manual_seed(7)
    prompt = [1] + torch.randint(3, 256, (15,), generator=g).tolist()
    sequence, greedy, logprobs = list(prompt), [], []
    with torch.no_grad():
        while len(sequence) < 40:
            logits = exact(torch.tensor([sequence])).logits[0, -1]
            token = int(logits.argmax())
            greedy.append(token)
            logprobs.append(float(torch.log_softmax(logits, -1)[token]))
            sequence.append(token)
        everything = exact(torch.tensor([sequence])).logits[0]
    positions = [0, 1, 15, 39]
    # SFT: loss = -sum(mask * logp(target)) / sum(mask) over tokens[:, 1:], inputs tokens[:, :-1].
    tokens = [[1] + torch.randint(3, 256, (23,), generator=g).tolist(), [1] + torch.randint(3, 256, (23,), generator=g).tolist()]
    mask = [[float(t >= 4) for t in range(23)], [float(t % 3 != 0) for t in range(23)]]
    exact.zero_grad()
    inputs = torch.tensor([s[:-1] for s in tokens])
    targets = torch.tensor([s[1:] for s in tokens])
    logp = torch.log_softmax(exact(inputs).logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    m = torch.tensor(mask, dtype=torch.float64)
    loss = -(m * logp).sum() / m.sum()
    loss.backward()
    grads = {name: p.grad.reshape(-1).tolist() for name, p in exact.named_parameters() if "self_attn" in name}
    reference = {
        "note": "transformers SmolLM3ForCausalLM in float64 on the stored weights (layers 1 and 3 without RoPE); greedy "
                "without EOS stop to 40 tokens; logits_at[p] = logits after feeding (prompt_ids + greedy_ids)[0..p]; sft: "
                "masked cross-entropy and its gradient for every attention tensor, flattened in the file's row order",
        "prompt_ids": prompt, "greedy_ids": greedy, "greedy_logprobs": logprobs,
        "logits_at": {str(p): everything[p].tolist() for p in positions},
        "sft": {"tokens": tokens, "mask": mask, "loss": float(loss), "gradients": grads},
    }
    with open(os.path.join(out, "smollm3-nope.reference.json"), "w") as f:
        json.dump(reference, f)
    print("greedy", greedy, "loss", float(loss))

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
