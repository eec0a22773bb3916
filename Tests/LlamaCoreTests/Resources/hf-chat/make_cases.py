# Renders conversations with transformers' apply_chat_template for the three supported templates
# (LLaMA2-Chat's, ChatML, Meta-Llama-3-Instruct's) and writes {format, bos, eos, messages,
# add_generation_prompt, text} lines: the expected outputs of ChatFormat.render.
import json, random, sys
from transformers.utils.chat_template_utils import render_jinja_template
LLAMA2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
LLAMA3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
templates = {"llama2": (LLAMA2, "<s>", "</s>"), "chatml": (CHATML, "<|endoftext|>", "<|im_end|>"), "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>")}
rng = random.Random(7)
words = ["Hi!", "  Tell me a story.  ", "Bye", "\nWhat is 2+2?\n", "Sure: 4.", "héllo wörld", "日本語", "tab\there", " ", "multi\nline\n\ntext ", "emoji 🦊", "\u00a0nbsp\u00a0", "a" ]
out = []
for i in range(120):
    fmt = ["llama2", "chatml", "llama3"][i % 3]
    tpl, bos, eos = templates[fmt]
    n = rng.randint(1, 6)
    msgs = []
    if rng.random() < 0.4: msgs.append({"role": "system", "content": rng.choice(words)})
    for t in range(n):
        role = "user" if t % 2 == 0 else "assistant"
        msgs.append({"role": role, "content": rng.choice(words) + (" " + rng.choice(words) if rng.random() < 0.5 else "")})
    agp = rng.random() < 0.7
    rendered, _ = render_jinja_template(conversations=[msgs], chat_template=tpl, add_generation_prompt=agp, bos_token=bos, eos_token=eos)
    out.append({"format": fmt, "bos": bos, "eos": eos, "messages": msgs, "add_generation_prompt": agp, "text": rendered[0]})
with open(sys.argv[1], "w") as f:
    for o in out: f.write(json.dumps(o, ensure_ascii=False) + "\n")
print(len(out), "cases")
