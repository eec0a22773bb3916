"""transformers' float64 outputs past the sliding window (48 positions) of the stored fixtures whose layers attend
through one: ../hf-mistral/mistral-window (every layer), ../hf-phi3/phi3-fused (every layer, fused projections),
../hf-gemma3/gemma3-tiny (layers 0 and 2, with their local RoPE base) and ../hf-gemma2/gemma2-softcap (layers 0 and 2,
softcapped scores), and the two Gemma reward models beside them. Per model: greedy ids and their log-probabilities
from a 100-token random prompt to 112 tokens (more than two windows), the logits at six positions of that sequence
(checked to differ from full attention's past the window); for
Mistral and the Gemmas the masked next-token cross-entropy of two 100-token sequences with its gradient for every
tensor (names as the file spells them, rows in its order, 9 significant digits); for the Gemmas their reward
models' scores of those sequences. The stored weights are read, never rewritten: `python generate.py .`
(transformers 5.x, torch) run in this folder writes beyond-window.reference.json."""
import json, os, sys
import torch
from transformers import (AutoModelForCausalLM, Gemma2ForSequenceClassification,
                          Gemma3TextForSequenceClassification)

HERE = os.path.dirname(os.path.abspath(__file__))
WINDOW = 48
LENGTH = 112
MODELS = {
    "mistral": ("hf-mistral/mistral-window", None, 1),
    "phi3": ("hf-phi3/phi3-fused", None, 1),
    "gemma3": ("hf-gemma3/gemma3-tiny", ("hf-gemma3/gemma3-tiny-rm", Gemma3TextForSequenceClassification), 2),
    "gemma2": ("hf-gemma2/gemma2-softcap", ("hf-gemma2/gemma2-softcap-rm", Gemma2ForSequenceClassification), 2),
}

def short(values):
    return [float("%.9g" % v) for v in values]

def main(out):
    reference = {"note": "transformers in float64 (eager attention) on the stored weights, sliding window 48: greedy ids "
                         "without EOS stop from the 100 prompt_ids to 112 tokens; logits_at[p] = logits after feeding "
                         "(prompt_ids + greedy_ids)[0..p]; sft: masked cross-entropy of two 100-token sequences and its "
                         "gradient for every tensor, flattened in the file's row order; reward_scores: the reward "
                         "model's score of each sft sequence at its last token"}
    for name, (directory, reward, bos) in MODELS.items():
        path = os.path.join(HERE, "..", directory)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64, attn_implementation="eager").eval()
        assert model.config.sliding_window == WINDOW
        g = torch.Generator().manual_seed(23)
        prompt = [bos] + torch.randint(3, 256, (99,), generator=g).tolist()
        sequence, greedy, logprobs = list(prompt), [], []
        with torch.no_grad():
            while len(sequence) < LENGTH:
                logits = model(torch.tensor([sequence])).logits[0, -1]
                token = int(logits.argmax())
                greedy.append(token)
                logprobs.append(float(torch.log_softmax(logits, -1)[token]))
                sequence.append(token)
            everything = model(torch.tensor([sequence])).logits[0]
            # The window matters: with one longer than the sequence, the last position's logits move.
            model.config.sliding_window = LENGTH + 1
            full = model(torch.tensor([sequence])).logits[0]
            model.config.sliding_window = WINDOW
            assert (full[LENGTH - 1] - everything[LENGTH - 1]).abs().max() > 1e-2, name
            assert (full[WINDOW - 1] - everything[WINDOW - 1]).abs().max() < 1e-12, name
        entry = {"prompt_ids": prompt, "greedy_ids": greedy, "greedy_logprobs": logprobs,
                 "logits_at": {str(p): everything[p].tolist() for p in [15, WINDOW - 1, WINDOW, 60, 99, LENGTH - 1]}}
        if name != "phi3":
            tokens = [[bos] + torch.randint(3, 256, (99,), generator=g).tolist() for _ in range(2)]
            mask = [[float(t >= 4) for t in range(99)], [float(t % 3 != 0) for t in range(99)]]
            model.zero_grad()
            inputs = torch.tensor([s[:-1] for s in tokens])
            targets = torch.tensor([s[1:] for s in tokens])
            logp = torch.log_softmax(model(inputs).logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            m = torch.tensor(mask, dtype=torch.float64)
            loss = -(m * logp).sum() / m.sum()
            loss.backward()
            grads = {n: short(p.grad.reshape(-1).tolist()) for n, p in model.named_parameters()}
            entry["sft"] = {"tokens": tokens, "mask": mask, "loss": float(loss.detach()), "gradients": grads}
            if reward:
                rm_directory, rm_class = reward
                rm = rm_class.from_pretrained(os.path.join(HERE, "..", rm_directory), dtype=torch.float64,
                                              attn_implementation="eager").eval()
                with torch.no_grad():
                    entry["reward_scores"] = [float(rm(torch.tensor([s])).logits[0, 0]) for s in tokens]
        reference[name] = entry
        print(name, "greedy", greedy[:8], "...", "loss", entry.get("sft", {}).get("loss"), "scores", entry.get("reward_scores"))
    with open(os.path.join(out, "beyond-window.reference.json"), "w") as f:
        json.dump(reference, f)

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
