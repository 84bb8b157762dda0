#version 330 core
// 3D Gaussian splat fragment shader; pairs with splat.vert.
//
// Compositing: splats are drawn back to front with straight (not premultiplied) colour and
//   glBlendFuncSeparate(SRC_ALPHA, ONE_MINUS_SRC_ALPHA, ONE, ONE_MINUS_SRC_ALPHA),
// so with the framebuffer cleared to (background, 0) every attachment ends with
//   rgb = sum_i c_i w_i + T background,   a = 1 - T,   w_i = alpha_i prod_{j in front of i} (1 - alpha_j),
// exactly the front-to-back sum of the torch renderer (which also stops a pixel once T < 1e-4; that
// cutoff is the one thing back-to-front blending cannot reproduce).
//
// Outputs: location 0 = the splat colour chosen by the vertex shader for the debug mode (rgb, turbo
// depth colour, white for alpha); with DEPTH_LAYER defined (the host prepends the #define) also
// location 1 = (z, 0, 0, alpha), whose red channel accumulates sum_i w_i z_i (the renderer's "depth"
// output) when cleared to 0. The display program leaves it out: on llvmpipe every extra output or
// branch costs per fragment, and fragments are most of the frame time.
//
// Modes (u_mode): 0 rgb, 1 depth, 2 alpha: Gaussian splats; 3 centres: opaque dots at the means;
// 4 ellipsoids: the opaque u_ellipse_sigma-sigma ellipse of each splat (limacv's "gaussian ball"),
// darkened towards the rim, nearest on top. A host may pin the mode at compile time by prepending
// "#define STATIC_MODE <n>" (any of 0-2 selects the splat path): the compiler then drops the other
// branches, which llvmpipe otherwise pays for on every fragment.

#ifdef STATIC_MODE
const int u_mode = STATIC_MODE;
#else
uniform int u_mode;
#endif
uniform float u_ellipse_sigma;

flat in vec2 v_mean2d;
flat in vec3 v_conic;
flat in vec4 v_color;
flat in float v_depth;

layout(location = 0) out vec4 out_color;
#ifdef DEPTH_LAYER
layout(location = 1) out vec4 out_depth;
#define WRITE_DEPTH(alpha) out_depth = vec4(v_depth, 0.0, 0.0, alpha)
#else
#define WRITE_DEPTH(alpha)
#endif

const float MAX_ALPHA = 0.99;
const float MIN_ALPHA = 1.0 / 255.0;
const float MAX_MAHALANOBIS_HALF = 4.5;  // 1/2 d^T cov2d^-1 d <= 4.5: inside the 3 sigma ellipse

void main() {
    if (u_mode == 3) {
        out_color = vec4(v_color.rgb, 1.0);
        WRITE_DEPTH(1.0);
        return;
    }
    // gl_FragCoord.xy is the pixel centre in our pixel coordinates (see splat.vert).
    vec2 d = gl_FragCoord.xy - v_mean2d;
    float power = -0.5 * (v_conic.x * d.x * d.x + v_conic.z * d.y * d.y) - v_conic.y * d.x * d.y;
    if (power > 0.0 || power < -MAX_MAHALANOBIS_HALF) {
        discard;
    }
    if (u_mode == 4) {
        float limit = 0.5 * u_ellipse_sigma * u_ellipse_sigma;
        if (-power > limit) {
            discard;
        }
        // Flat colour, darkened towards the rim so that overlapping ellipses stay distinguishable.
        float shade = 0.55 + 0.45 * sqrt(1.0 + power / limit);
        out_color = vec4(v_color.rgb * shade, 1.0);
        WRITE_DEPTH(1.0);
        return;
    }
    float alpha = min(MAX_ALPHA, v_color.a * exp(power));
    if (alpha < MIN_ALPHA) {
        discard;
    }
    out_color = vec4(v_color.rgb, alpha);
    WRITE_DEPTH(alpha);
}
