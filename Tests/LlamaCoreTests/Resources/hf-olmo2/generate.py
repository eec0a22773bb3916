"""A small random-weight Olmo2ForCausalLM directory (no norms on the blocks' inputs, norms on the attention's and
the feed-forward's outputs before the residual add, queries and keys RMS-normalised across all heads before
RoPE, grouped-query attention, untied embeddings, RoPE base 500000) with transformers' float64 outputs on the
stored weights: greedy ids and logits, and the masked next-token cross-entropy of two sequences with its gradient
for every tensor (names as the file spells them, rows in its order); and the same trunk as a one-label
Olmo2ForSequenceClassification with its scores of the two sequences: `python generate.py .` (transformers 5.x, torch) run
in this folder."""
import json, os, shutil, sys
import torch
from transformers import Olmo2Config, Olmo2ForCausalLM, Olmo2ForSequenceClassification

def main(out):
    torch.manual_seed(23)
    config = Olmo2Config(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = Olmo2ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Norm weights around 1 (as trained ones are), the rest small.
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.3)
    directory = os.path.join(out, "olmo2-postnorm")
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    exact = Olmo2ForCausalLM.from_pretrained(directory, dtype=torch.float64, attn_implementation="eager").eval()
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
    grads = {name: p.grad.reshape(-1).tolist() for name, p in exact.named_parameters()}
    # The reward model: the same trunk and a one-label score head, scoring each sequence at its last token.
    rm_config = Olmo2Config.from_dict(config.to_dict())
    rm_config.num_labels = 1
    reward = Olmo2ForSequenceClassification(rm_config)
    with torch.no_grad():
        reward.model.load_state_dict({k[len("model."):]: v for k, v in model.state_dict().items() if k != "lm_head.weight"})
        reward.score.weight.normal_(0, 0.3)
    rm_directory = os.path.join(out, "olmo2-postnorm-rm")
    shutil.rmtree(rm_directory, ignore_errors=True)
    reward.save_pretrained(rm_directory)
    exact_rm = Olmo2ForSequenceClassification.from_pretrained(rm_directory, dtype=torch.float64, attn_implementation="eager").eval()
    with torch.no_grad():
        scores = [float(exact_rm(torch.tensor([s])).logits[0, 0]) for s in tokens]
    reference = {
        "note": "transformers Olmo2ForCausalLM in float64 on the stored weights (eager attention); greedy without EOS stop "
                "to 40 tokens; logits_at[p] = logits after feeding (prompt_ids + greedy_ids)[0..p]; sft: masked cross-entropy "
                "and its gradient for every tensor, flattened in the file's row order; reward_scores: olmo2-postnorm-rm's score "
                "of each sft sequence at its last token",
        "prompt_ids": prompt, "greedy_ids": greedy, "greedy_logprobs": logprobs,
        "logits_at": {str(p): everything[p].tolist() for p in positions},
        "sft": {"tokens": tokens, "mask": mask, "loss": float(loss.detach()), "gradients": grads},
        "reward_scores": scores,
    }
    with open(os.path.join(out, "olmo2-postnorm.reference.json"), "w") as f:
        json.dump(reference, f)
    print("greedy", greedy, "loss", float(loss.detach()))

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
