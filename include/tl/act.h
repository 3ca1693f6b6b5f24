/*
 * act.h - element-wise activations, forward and backward side by side.
 *
 * Forward writes out[i] = f(inp[i]) for i < count. Backward writes (does not
 * add) dinp[i] = dout[i] * f'(.) computed from the forward OUTPUT y, which is
 * what PyTorch does for all three: relu: y > 0; tanh: 1 - y^2; sigmoid: y (1 - y).
 * out may alias inp, dinp may alias dout.
 */
#ifndef TL_ACT_H
#define TL_ACT_H

#include <stddef.h>

void tl_relu_forward(float *out, const float *inp, size_t count);
void tl_relu_backward(float *dinp, const float *dout, const float *y, size_t count);
void tl_tanh_forward(float *out, const float *inp, size_t count);
void tl_tanh_backward(float *dinp, const float *dout, const float *y, size_t count);
void tl_sigmoid_forward(float *out, const float *inp, size_t count);
void tl_sigmoid_backward(float *dinp, const float *dout, const float *y, size_t count);

#endif
