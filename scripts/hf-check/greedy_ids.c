// Greedy ids from llama2.c's own run.c (included unchanged, its main renamed): the checkpoint is
// read by run.c's build_transformer and every logit comes from run.c's forward.
#define main run_c_main
#include RUN_C  /* build with -DRUN_C='"/path/to/llama2.c/run.c"' */
#undef main
int main(int argc, char** argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s checkpoint steps id [id ...]\n", argv[0]); return 1; }
    Transformer t; build_transformer(&t, argv[1]);
    int steps = atoi(argv[2]);
    int n = argc - 3; int token = atoi(argv[3]);
    for (int pos = 0; pos < n - 1 + steps; pos++) {
        float* logits = forward(&t, token, pos);
        if (pos < n - 1) { token = atoi(argv[4 + pos]); continue; }
        int best = 0; for (int i = 1; i < t.config.vocab_size; i++) if (logits[i] > logits[best]) best = i;
        printf("%d%s", best, pos == n - 2 + steps ? "\n" : ",");
        token = best;
    }
    free_transformer(&t); return 0;
}
