/* act.c - relu, tanh, sigmoid. */
#include "tl/act.h"

#include <math.h>

void tl_relu_forward(float *out, const float *inp, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void tl_relu_backward(float *dinp, const float *dout, const float *y, size_t count) {
    for (size_t i = 0; i < count; i++) dinp[i] = y[i] > 0.0f ? dout[i] : 0.0f;
}

void tl_tanh_forward(float *out, const float *inp, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = tanhf(inp[i]);
}

void tl_tanh_backward(float *dinp, const float *dout, const float *y, size_t count) {
    for (size_t i = 0; i < count; i++) dinp[i] = dout[i] * (1.0f - y[i] * y[i]);
}

void tl_sigmoid_forward(float *out, const float *inp, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = 1.0f / (1.0f + expf(-inp[i]));
}

void tl_sigmoid_backward(float *dinp, const float *dout, const float *y, size_t count) {
    for (size_t i = 0; i < count; i++) dinp[i] = dout[i] * ((1.0f - y[i]) * y[i]);
}
