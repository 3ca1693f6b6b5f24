/* handshake.h - what fuzz_handshake.c and gen_handshake_corpus.c share. */
#ifndef TL_FUZZ_HANDSHAKE_H
#define TL_FUZZ_HANDSHAKE_H

#include <stdint.h>

/* A READY in a seed carries this run_id ("FZRUN_ID" in its little-endian
 * bytes); fuzz_handshake replaces every occurrence of those 8 bytes in an
 * input by the orchestrator's real (random) run_id, which it learned from a
 * WELCOME of its own, so that an input can register a node. */
#define FUZZ_RUN_ID_PLACEHOLDER UINT64_C(0x44495f4e55525a46)

#endif
