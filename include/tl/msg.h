/*
 * msg.h - the protocol's messages: encode to iovecs, decode to structs with
 * zero-copy tensor views (docs/protocol.md §3, §4).
 *
 * Encoding writes the fixed fields, strings and tensor headers (with their
 * alignment padding) into a tl_msg_enc's own small buffer and lists the
 * pieces as iovecs, pointing at the caller's tensor data in place: the frame
 * writer then sends everything with writev, copying no tensor data.
 *
 * Decoding validates every field against what remains of the payload before
 * touching it and yields tensors as views into the payload buffer (which the
 * frame reader keeps 8-byte aligned). Decoding checks structure: lengths,
 * caps, dtype and rank of each field, zero padding, no trailing bytes. The
 * receiver checks meaning with the helpers at the end: exact shapes, finite
 * values, index ranges.
 *
 *     // send (node, blocking)
 *     tl_msg m = {.type = TL_MSG_BACKWARD_RESULT};
 *     m.u.bwd_result.step = step;
 *     m.u.bwd_result.grads = tl_tensor_1d(TL_DT_F32, grads, n_params);
 *     rc = tl_msg_send(c, &w, &m, deadline);
 *
 *     // receive (orchestrator, non-blocking)
 *     if ((rc = tl_frame_read(&r, c, &f)) == 0 && (rc = tl_msg_decode(&f, &m)) == 0
 *         && m.type == TL_MSG_BACKWARD_RESULT)
 *         rc = tl_tensor_check(&m.u.bwd_result.grads, TL_DT_F32, 1, &p_node, "grads");
 */
#ifndef TL_MSG_H
#define TL_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "tl/conn.h"
#include "tl/frame.h"

#define TL_PROTO_VERSION                                                                        \
    4 /* 2: READY; 3: data description, STATS, EVAL, sealed mode; 4: path masks, sums in frames \
         over shm */
#define TL_MSG_STR_MAX 4096
#define TL_TENSOR_MAX_RANK 4

typedef enum tl_msg_type {
    TL_MSG_HELLO = 1,           /* node -> orch */
    TL_MSG_WELCOME = 2,         /* orch -> node */
    TL_MSG_REJECT = 3,          /* orch -> node */
    TL_MSG_FORWARD = 4,         /* orch -> node */
    TL_MSG_FORWARD_RESULT = 5,  /* node -> orch */
    TL_MSG_BACKWARD = 6,        /* orch -> node */
    TL_MSG_BACKWARD_RESULT = 7, /* node -> orch */
    TL_MSG_HEARTBEAT = 8,       /* either way */
    TL_MSG_DONE = 9,            /* orch -> node */
    TL_MSG_ERROR = 10,          /* either way */
    TL_MSG_READY = 11,          /* node -> orch: WELCOME checked, the node takes part */
    TL_MSG_STATS_REQUEST = 12,  /* orch -> node: send your per-feature sums (before WELCOME) */
    TL_MSG_STATS = 13,          /* node -> orch: count, per-feature sums and sums of squares */
    TL_MSG_EVAL = 14,           /* orch -> node: evaluate these parameters on your test rows */
    TL_MSG_EVAL_RESULT = 15,    /* node -> orch: the evaluation sums (evalstats.h) */
    TL_MSG_SEALED_STEP = 16,    /* orch -> every node: masked sum of the node-side gradients */
    TL_MSG_PARAM_MAC = 17,      /* node -> orch: MAC of its node-side parameters */
    TL_MSG_FINAL = 18,          /* orch -> node: the orchestrator side at the end (sealed) */
    TL_MSG_STATE_REQUEST = 19,  /* orch -> node: seal your node side for node `to` (sealed) */
    TL_MSG_STATE_BLOB = 20,     /* node -> orch -> node: a node side, sealed for `to` (sealed) */
    TL_MSG_CHECKPOINT = 21, /* orch -> node: save your node side of `step`; node -> orch: saved */
} tl_msg_type;

/* Privacy mode of a run (HELLO, WELCOME; docs/protocol.md §4, docs/security.md). */
typedef enum tl_privacy {
    TL_PRIVACY_OPEN = 0,   /* the reference protocol: the orchestrator holds every parameter */
    TL_PRIVACY_SEALED = 1, /* the node side stays at the nodes; gradients are masked */
} tl_privacy;

#define TL_SEALED_F_MAC 0x1u /* SEALED_STEP.flags: answer with PARAM_MAC after applying it */

typedef enum tl_dtype {
    TL_DT_F32 = 1,
    TL_DT_I64 = 2,
    TL_DT_U32 = 3,
    TL_DT_I32 = 4,
    TL_DT_F64 = 5, /* protocol 3: STATS sums */
    TL_DT_U64 = 6, /* protocol 3: EVAL_RESULT words; sealed mode's masked fixed point */
    TL_DT_U8 = 7,  /* bytes: STATE_BLOB's sealed node side */
} tl_dtype;

/* REJECT codes (docs/protocol.md §5). */
enum {
    TL_REJECT_UNKNOWN_ID = 1,
    TL_REJECT_DUPLICATE_ID = 2,
    TL_REJECT_ID_OUT_OF_RANGE = 3,
    TL_REJECT_VERSION = 4,
    TL_REJECT_FINGERPRINT = 5,
    TL_REJECT_RUN_FULL = 6,
    TL_REJECT_NOT_AUTHENTICATED = 7,
    TL_REJECT_BAD_HELLO = 8,
    TL_REJECT_GROUP_KEY = 9, /* sealed: the node holds another group's key */
    TL_REJECT_PRIVACY = 10,  /* the node's privacy mode differs from the run's */
};

#define TL_HELLO_F_ZSTD 0x1u      /* HELLO.flags: node can do zstd */
#define TL_HELLO_F_SHM 0x2u       /* HELLO.flags: node can share memory (unix socket) */
#define TL_ELEM_WIRE_U8 0         /* HELLO.elem: uint8 samples (scaled by 1/255) */
#define TL_ELEM_WIRE_F32 1        /* HELLO.elem: float32 samples */
#define TL_WELCOME_NORM_SCALAR 0  /* WELCOME.norm: x = (v - mean) / std ("none" is 0, 1) */
#define TL_WELCOME_NORM_FEATURE 1 /* WELCOME.norm: x = (v - mean_f[f]) / std_f[f] */
#define TL_STATS_NORM 1           /* STATS_REQUEST.what: the sums for --normalize standardize */
#define TL_WELCOME_F_ZSTD 0x1u    /* WELCOME.flags: compression on for this connection */
#define TL_WELCOME_F_SHM 0x2u     /* WELCOME.flags: the shared-parameters fd follows (shm.h) */
/* (with TL_WELCOME_F_SHM, FORWARD carries no parameters) */

/* A tensor: on encode, the caller's data to send; on decode, a view into the
 * frame's payload (valid as long as the payload). data is 8-byte aligned on
 * decode and may be anything non-NULL (or NULL when numel is 0) on encode.
 * A dtype of 0 means "absent" (FORWARD_RESULT's unused g / labels). */
typedef struct tl_tensor {
    uint8_t dtype; /* tl_dtype */
    uint8_t rank;  /* 1..TL_TENSOR_MAX_RANK */
    uint32_t dims[TL_TENSOR_MAX_RANK];
    uint64_t numel; /* product of dims; set by decode and by the tl_tensor_* builders */
    const void *data;
} tl_tensor;

static inline tl_tensor tl_tensor_1d(tl_dtype dt, const void *data, uint32_t n) {
    tl_tensor t = {(uint8_t)dt, 1, {n, 0, 0, 0}, n, data};
    return t;
}
static inline tl_tensor tl_tensor_2d(tl_dtype dt, const void *data, uint32_t rows, uint32_t cols) {
    tl_tensor t = {(uint8_t)dt, 2, {rows, cols, 0, 0}, (uint64_t)rows * cols, data};
    return t;
}

/* Bytes per element of dtype, or 0 for an unknown dtype. */
size_t tl_dtype_size(int dtype);

typedef struct tl_msg_hello {
    uint32_t node_id;
    uint16_t proto_version; /* TL_PROTO_VERSION */
    uint16_t flags;         /* TL_HELLO_F_*; unknown bits are ignored by receivers */
    uint64_t sample_count;
    uint64_t fingerprint;
    char version[TL_MSG_STR_MAX + 1]; /* software version, NUL-terminated */
    /* protocol 3: what the node's data is (docs/protocol.md §4). Decoded only
     * when proto_version is 3; zero for an older node (refused by version). */
    uint32_t classes;     /* the node's class count (largest label + 1, or its names) */
    uint32_t elem;        /* TL_ELEM_WIRE_* */
    uint32_t rank;        /* sample rank: 1 (features) or 3 (C, H, W) */
    uint32_t shape[3];    /* rank 1: {features, 0, 0}; rank 3: {C, H, W} */
    uint64_t test_count;  /* held-out rows the node can evaluate (0: none) */
    uint64_t labels_hash; /* FNV-1a of the class names (string labels), 0: integer labels */
    uint32_t privacy;     /* tl_privacy the node insists on */
    uint8_t key_id[16];   /* sealed: the group key's id (groupkey.h); open: zeros */
} tl_msg_hello;

typedef struct tl_msg_welcome {
    uint64_t run_id;
    uint32_t flags; /* TL_WELCOME_F_*; decode rejects unknown bits */
    uint32_t cut;   /* number of node-side modules */
    uint32_t mode;  /* tl_mode (config.h): 0 traverse, 1 split; decode rejects others */
    uint32_t n_classes;
    uint32_t input_dim;
    float mean, std;
    uint32_t heartbeat_ms; /* 0: no heartbeats */
    char model[TL_MSG_STR_MAX + 1];
    /* protocol 3 */
    uint32_t norm; /* TL_WELCOME_NORM_*: 0 scalar (mean, std above) */
    uint32_t rank; /* expected sample shape; 0: not stated (input_dim only) */
    uint32_t shape[3];
    tl_tensor mean_f; /* F32 [input_dim] with TL_WELCOME_NORM_FEATURE, else F32 [0] */
    tl_tensor std_f;  /* F32 [input_dim] with TL_WELCOME_NORM_FEATURE, else F32 [0] */
    /* sealed mode (docs/protocol.md §8.2) */
    uint32_t privacy;   /* tl_privacy; decode rejects others */
    uint32_t mac_every; /* sealed: SEALED_STEP asks for PARAM_MAC every this many steps */
    /* sealed: the optimizer the nodes run on the node side (optim.h's tl_optim_cfg) */
    uint32_t opt_kind; /* tl_optim_kind */
    uint32_t opt_nesterov;
    double opt_lr, opt_rho, opt_eps, opt_momentum, opt_dampening, opt_weight_decay, opt_beta1,
        opt_beta2;
    uint64_t opt_steps; /* optimizer steps already taken by the run (resume) */
} tl_msg_welcome;

typedef struct tl_msg_reject {
    uint32_t code; /* TL_REJECT_* */
    char reason[TL_MSG_STR_MAX + 1];
} tl_msg_reject;

typedef struct tl_msg_forward {
    uint64_t step;
    tl_tensor rows;   /* U32 [n] local indices */
    tl_tensor params; /* F32 [P] flat parameter block */
} tl_msg_forward;

typedef struct tl_msg_forward_result {
    uint64_t step;
    double loss_sum;
    uint32_t correct;
    tl_tensor h;      /* F32 [n, d_c] */
    tl_tensor g;      /* traverse: F32 [n, classes]; dtype 0 in split mode */
    tl_tensor labels; /* split: I32 [n]; dtype 0 in traverse mode */
} tl_msg_forward_result;

typedef struct tl_msg_backward {
    uint64_t step;
    uint32_t attempt;       /* sealed: the mask attempt (mask.h); open: 0 */
    tl_tensor dh;           /* F32 [n, d_c] */
    tl_tensor participants; /* sealed: U32 [k] node ids (1-based) in plan order; open: U32 [0] */
} tl_msg_backward;

typedef struct tl_msg_backward_result {
    uint64_t step;
    tl_tensor grads; /* open: F32 [P_node]; sealed: U64 [P_node] masked fixed point */
} tl_msg_backward_result;

typedef struct tl_msg_sealed_step {
    uint64_t step;
    uint32_t attempt;
    uint32_t flags;         /* TL_SEALED_F_* */
    double lr;              /* the step's learning rate */
    tl_tensor participants; /* U32 [k] node ids in plan order */
    tl_tensor sum;          /* U64 [P_node]: sum of the masked vectors, mod 2^64 */
} tl_msg_sealed_step;

typedef struct tl_msg_param_mac {
    uint64_t step;   /* the steps applied */
    uint8_t mac[32]; /* seal.h's tl_param_mac of the node side */
} tl_msg_param_mac;

typedef struct tl_msg_final {
    uint64_t step;
    tl_tensor params; /* F32 [P - P_node]: the orchestrator side */
} tl_msg_final;

typedef struct tl_msg_heartbeat {
    uint64_t nonce;
} tl_msg_heartbeat;

typedef struct tl_msg_done {
    char reason[TL_MSG_STR_MAX + 1];
} tl_msg_done;

#define TL_STATE_NONE UINT64_MAX /* READY.state_step: this node holds no node side of the run */

typedef struct tl_msg_ready {
    uint64_t run_id;     /* WELCOME's, echoed */
    uint64_t state_step; /* sealed: the step of the node side it holds (WELCOME's opt_steps, or
                          * TL_STATE_NONE: it needs one, STATE_BLOB); open: 0 */
} tl_msg_ready;

typedef struct tl_msg_stats_request {
    uint32_t what; /* TL_STATS_NORM; decode rejects others */
} tl_msg_stats_request;

typedef struct tl_msg_stats {
    uint64_t count;  /* rows summed: the node's training rows */
    tl_tensor sum;   /* F64 [features]: per-feature sums of v (norm.h) */
    tl_tensor sumsq; /* F64 [features]: per-feature sums of v * v */
} tl_msg_stats;

typedef struct tl_msg_eval {
    uint64_t step;    /* optimizer steps so far (echoed) */
    uint32_t bins;    /* B of the histograms (evalstats.h), 2..TL_EVAL_MAX_BINS */
    tl_tensor params; /* F32 [P] all the model's parameters; F32 [0]: the shared block */
} tl_msg_eval;

typedef struct tl_msg_eval_result {
    uint64_t step;
    tl_tensor stats; /* U64 [words]: tl_evalstats_encode's words (evalstats.h) */
} tl_msg_eval_result;

typedef struct tl_msg_state_request {
    uint64_t step; /* the node side wanted: after this many steps (the sender's current) */
    uint32_t to;   /* node id it is for */
} tl_msg_state_request;

typedef struct tl_msg_state_blob {
    uint64_t step;
    uint32_t from, to; /* node ids: sealer and recipient (bound into the seal) */
    tl_tensor blob;    /* U8 [len]: nodestate.h's sealed node side */
} tl_msg_state_blob;

typedef struct tl_msg_checkpoint {
    uint64_t step; /* orch -> node: save the node side of this step; node -> orch: saved it */
} tl_msg_checkpoint;

typedef struct tl_msg_error {
    uint32_t code; /* positive TL_E* value (-rc) */
    char message[TL_MSG_STR_MAX + 1];
} tl_msg_error;

/* One message; type selects the member of u. About 4 KiB (the strings). */
typedef struct tl_msg {
    uint16_t type; /* tl_msg_type */
    union {
        tl_msg_hello hello;
        tl_msg_welcome welcome;
        tl_msg_reject reject;
        tl_msg_forward forward;
        tl_msg_forward_result fwd_result;
        tl_msg_backward backward;
        tl_msg_backward_result bwd_result;
        tl_msg_heartbeat heartbeat;
        tl_msg_done done;
        tl_msg_error error;
        tl_msg_ready ready;
        tl_msg_stats_request stats_request;
        tl_msg_stats stats;
        tl_msg_eval eval;
        tl_msg_eval_result eval_result;
        tl_msg_sealed_step sealed_step;
        tl_msg_param_mac param_mac;
        tl_msg_final final;
        tl_msg_state_request state_request;
        tl_msg_state_blob state_blob;
        tl_msg_checkpoint checkpoint;
    } u;
} tl_msg;

/* "HELLO", "FORWARD_RESULT", ...; for an unknown type "type N" in a
 * thread-local buffer valid until the next such call. */
const char *tl_msg_type_name(int type);

#define TL_MSG_MAX_IOV 7
#define TL_MSG_ENC_BUF (TL_MSG_STR_MAX + 256)

/* An encoded message: iov[0..iovcnt) is the payload. Pieces point into buf
 * (fields, strings, tensor headers, padding) and at the caller's tensor data.
 * Because of the pointers into buf, a tl_msg_enc must not be moved or copied
 * after encoding, and it and the tensor data must stay alive and unchanged
 * until the frame is sent (tl_frame_writer_flush returned 0). */
typedef struct tl_msg_enc {
    uint16_t type;
    int iovcnt;
    uint64_t len; /* payload bytes */
    struct iovec iov[TL_MSG_MAX_IOV];
    size_t used; /* bytes of buf used */
    _Alignas(8) uint8_t buf[TL_MSG_ENC_BUF];
} tl_msg_enc;

/* Encodes m into e (no I/O, no allocation, no copy of tensor data). Checks
 * what a receiver would reject: strings over TL_MSG_STR_MAX, a tensor with
 * the wrong dtype or rank for its field, rank 0 or > 4, numel not the product
 * of dims, NULL data with numel > 0, FORWARD_RESULT with both or neither of g
 * and labels or row counts that differ, WELCOME with unknown flags, mode or
 * norm, STATS whose sum and sumsq differ in length, STATS_REQUEST with an
 * unknown `what`. HELLO's protocol-3 fields are written when proto_version is
 * 3 or more (a test may encode an old node's HELLO).
 * 0 or TL_EINVAL / TL_ERANGE. */
int tl_msg_encode(const tl_msg *m, tl_msg_enc *e);

/* Encodes m into e and queues it on w (tl_frame_writer_start): then call
 * tl_frame_writer_flush(w, c) until 0. e and the tensor data must stay put
 * until then (see tl_msg_enc). */
int tl_msg_start(tl_frame_writer *w, tl_msg_enc *e, const tl_msg *m);

/* Blocking send (node side): encode, write, wait until the frame is out or the
 * absolute deadline passes. */
int tl_msg_send(tl_conn *c, tl_frame_writer *w, const tl_msg *m, int64_t deadline_ms);

/* Decodes a payload of the given type into m. Tensor views point into payload,
 * which must be 8-byte aligned (TL_EINVAL otherwise) and outlive their use.
 * Strings are copied (NUL-terminated). TL_EPROTO with a message naming the
 * message type and field for anything malformed (see docs/protocol.md §3). */
int tl_msg_decode_payload(uint16_t type, const void *payload, uint64_t len, tl_msg *m);

/* tl_msg_decode_payload on a received frame. */
int tl_msg_decode(const tl_frame *f, tl_msg *m);

/* Blocking receive: tl_frame_recv + tl_msg_decode. Views point into r's
 * buffer (see tl_frame). */
int tl_msg_recv(tl_conn *c, tl_frame_reader *r, tl_msg *m, int64_t deadline_ms);

/* --- validation helpers for receivers (messages start with `what`) --- */

/* 0 if t has exactly this dtype, rank and dims; else TL_EPROTO, e.g.
 * "h: expected f32 [64, 128], got f32 [64, 127]". */
int tl_tensor_check(const tl_tensor *t, tl_dtype dtype, int rank, const uint32_t *dims,
                    const char *what);

/* 0 if every element of the F32 tensor t is finite; TL_ENUMERIC naming the
 * first bad element ("grads: element 17 is NaN"); TL_EINVAL if t is not F32. */
int tl_tensor_check_finite(const tl_tensor *t, const char *what);

/* 0 if every element of the integer tensor t (U32, I32 or I64) is in
 * [0, bound); TL_EPROTO naming the first that is not (rows below sample_count,
 * labels below n_classes). */
int tl_tensor_check_below(const tl_tensor *t, uint64_t bound, const char *what);

#endif
