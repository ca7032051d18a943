/*
 * sim.h — `quotagate sim`, the simulated provider used by the demo, the end-to-end tests
 * and the benchmarks.
 *
 * It speaks both dialects (OpenAI chat/completions/embeddings/responses, Anthropic
 * messages/count_tokens), streams with a configurable per-chunk delay, reports usage and
 * rate-limit headers, serves DeepSeek's /user/balance and OpenRouter's /api/v1/key, and
 * behaves per account (selected by the API key the gateway sends) in one of several
 * modes.  GET /sim/stats returns what it served per account, so tests can compare the
 * gateway's ledger with the provider's own count.  See docs/sim.md.
 */
#ifndef QG_SIM_H
#define QG_SIM_H

/* Entry point for `quotagate sim ARGS`; returns the process exit code. */
int qg_sim_main(int argc, char **argv);

#endif
