# Random LlamaForCausalLM models of other shapes, saved by transformers, with greedy references in float64.
import json, sys, torch, os
from transformers import LlamaConfig, LlamaForCausalLM
out = sys.argv[1]
cases = {
  "f16-mqa-3shards": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=1, vocab_size=300, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=1e6, tie_word_embeddings=False, dtype=torch.float16, shard="200KB"),
  "bf16-gqa-tied": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=4, vocab_size=500, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, dtype=torch.bfloat16, shard="5GB"),
  "f32-hs32": dict(hidden_size=128, intermediate_size=200, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, vocab_size=260, max_position_embeddings=96, rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=False, dtype=torch.float32, shard="100KB"),
}
torch.manual_seed(0)
for name, c in cases.items():
    dtype = c.pop("dtype"); shard = c.pop("shard")
    cfg = LlamaConfig(**c, bos_token_id=1, eos_token_id=2, initializer_range=0.1)
    m = LlamaForCausalLM(cfg).to(dtype)
    d = os.path.join(out, name); m.save_pretrained(d, max_shard_size=shard)
    ref = LlamaForCausalLM.from_pretrained(d, dtype=torch.float64).eval()
    ids = [1, 5, 17, 42, 99, 7]
    greedy, lps = [], []
    seq = list(ids)
    with torch.no_grad():
        for _ in range(20):
            lg = ref(torch.tensor([seq])).logits[0, -1]; lp = torch.log_softmax(lg, -1); n = int(lg.argmax())
            greedy.append(n); lps.append(float(lp[n])); seq.append(n)
    json.dump({"prompt_ids": ids, "greedy_ids": greedy, "greedy_logprobs": lps}, open(d + ".ref.json", "w"))
    print(name, sorted(os.listdir(d)))
