#version 330 core
// 3D Gaussian splat vertex shader (OpenGL 3.3 core: no SSBOs, so macOS GL 4.1 works).
//
// Attribute-less, non-instanced drawing (llvmpipe runs its vertex stage once per *instance* with a
// large fixed cost, so 20k instanced quads cost ~10x more than one indexed draw of 20k quads): quad k in
// draw order owns vertices 4k .. 4k+3 (an index buffer turns them into two triangles), its splat id is
// texel k of the R32I texture u_order (ids sorted back to front), and its corner is gl_VertexID & 3.
// The per-splat data is fetched from RGBA32F textures laid out row-major, u_tex_width texels per row:
//   u_centers: (x, y, z, opacity)        world-space mean, opacity in [0, 1]
//   u_cov_a:   (S00, S01, S02, S11)      3D covariance S = R diag(s)^2 R^T (precomputed on the CPU)
//   u_cov_b:   (S12, S22, 0, 0)
//   u_colors:  (r, g, b, 0)              SH colour for the current camera centre (evaluated on the CPU)
// With POINT_SPRITES defined (the host prepends the #define; used for the low-resolution frames while
// the orbit camera moves) each splat is one GL point instead of a quad: vertex k is splat k in draw
// order and gl_PointSize is the side of the square bounding its ellipse (capped at u_max_point_size).
// llvmpipe's vertex stage is single-threaded and costs per vertex, so one vertex per splat instead of
// four cuts it about 4x; the fragment shader is the same (it only uses gl_FragCoord), and at low
// resolution the splats are small, so the extra fragments of the square are few.
// Debug modes (u_mode): 0 rgb, 1 depth (turbo colour of the splat's view-space z over u_depth_range),
// 2 alpha (white), 3 centres (u_point_radius dots), 4 ellipsoids (see splat.frag).
//
// Camera convention (docs/ARCHITECTURE.md): u_w2c is the OpenCV world-to-camera matrix (+x right,
// +y down, +z forward), u_intrinsics = (fx, fy, cx, cy) in pixels, pixel (row i, col j) centred at
// (j + 0.5, i + 0.5). Pixel coordinates (u, v) go to NDC as 2 (u, v) / viewport - 1 *without* a y flip,
// so window coordinates equal our pixel coordinates: gl_FragCoord.xy = (j + 0.5, i + 0.5) for image
// row i, which is framebuffer row i counted from the bottom. glReadPixels returns the bottom row
// first, so the read-back array is already in image order (row 0 = top) and needs no flip.
//
// Projection (same as sparseags/render/projection.py): EWA with J evaluated at x/z, y/z clamped to
// 1.3x the half field of view, cov2d = J W S W^T J^T + 0.3 I, conic = inverse(cov2d); culled when
// z < u_near, when cov2d is not positive definite, or when the 3 sigma box misses the image.

uniform sampler2D u_centers;
uniform sampler2D u_cov_a;
uniform sampler2D u_cov_b;
uniform sampler2D u_colors;
uniform isampler2D u_order;
uniform int u_tex_width;

uniform mat4 u_w2c;          // OpenCV world-to-camera
uniform vec4 u_intrinsics;   // fx, fy, cx, cy (pixels)
uniform vec2 u_viewport;     // W, H (pixels)
uniform float u_near;        // cull plane (view-space z)
uniform int u_mode;          // 0 rgb, 1 depth, 2 alpha, 3 centres, 4 ellipsoids
uniform float u_point_radius;       // half size in pixels of the "centres" dots
uniform float u_ellipse_min_opacity; // "ellipsoids": splats below this opacity are hidden
uniform vec2 u_depth_range;  // "depth": (near, far) mapped to the ends of the colour map
uniform sampler2D u_colormap;  // 256 x 1 RGB look-up table (matplotlib "turbo"), linear filtering
uniform float u_max_point_size;  // POINT_SPRITES: the driver's largest point (pixels)

flat out vec2 v_mean2d;      // pixels
flat out vec3 v_conic;       // (a, b, c) of [[a, b], [b, c]] = cov2d^-1
flat out vec4 v_color;       // colour of the debug mode, opacity
flat out float v_depth;      // view-space z

const float LOW_PASS = 0.3;       // px^2 added to the 2D covariance diagonal
const float FOV_MARGIN = 0.3;     // Jacobian clamp at (1 + FOV_MARGIN) x the half field of view
const float SIGMA_EXTENT = 3.0;   // quad covers the 3 sigma ellipse
const float MIN_ALPHA = 1.0 / 255.0;
const vec4 CULLED = vec4(0.0, 0.0, 2.0, 1.0);  // z/w = 2 lies outside the clip volume

ivec2 texel(int index) {
    return ivec2(index % u_tex_width, index / u_tex_width);
}

vec4 fetch(sampler2D tex, int index) {
    return texelFetch(tex, texel(index), 0);
}

vec2 quad_corner() {
    // corner c = gl_VertexID & 3 -> (-1,-1), (1,-1), (-1,1), (1,1)
    int corner = gl_VertexID & 3;
    return vec2(float(corner & 1), float(corner >> 1)) * 2.0 - 1.0;
}

#ifdef POINT_SPRITES
const int VERTICES_PER_SPLAT_LOG2 = 0;
#else
const int VERTICES_PER_SPLAT_LOG2 = 2;
#endif

vec4 pixel_to_clip(vec2 pixel) {
    return vec4(pixel / u_viewport * 2.0 - 1.0, 0.0, 1.0);
}

void main() {
    int a_index = texelFetch(u_order, texel(gl_VertexID >> VERTICES_PER_SPLAT_LOG2), 0).r;
    vec4 center = fetch(u_centers, a_index);
    vec4 cov_a = fetch(u_cov_a, a_index);
    vec4 cov_b = fetch(u_cov_b, a_index);
    vec3 t = (u_w2c * vec4(center.xyz, 1.0)).xyz;  // OpenCV camera space
    v_depth = t.z;
    // The colour is constant per splat in every mode, so it is chosen here rather than per fragment.
    vec3 color = fetch(u_colors, a_index).rgb;
    if (u_mode == 1) {  // depth: (z - near) / (far - near) through the colour map (texel centres at the ends)
        float s = clamp((t.z - u_depth_range.x) / max(u_depth_range.y - u_depth_range.x, 1e-12), 0.0, 1.0);
        color = textureLod(u_colormap, vec2((s * 255.0 + 0.5) / 256.0, 0.5), 0.0).rgb;
    } else if (u_mode == 2) {  // alpha: white splats over black
        color = vec3(1.0);
    }
    v_color = vec4(color, center.w);
    if (t.z < u_near) {
        gl_Position = CULLED;
        return;
    }
    float fx = u_intrinsics.x, fy = u_intrinsics.y, cx = u_intrinsics.z, cy = u_intrinsics.w;
    v_mean2d = vec2(fx * t.x / t.z + cx, fy * t.y / t.z + cy);

    if (u_mode == 3) {  // centres: fixed-size dots, no covariance needed
#ifdef POINT_SPRITES
        gl_PointSize = min(2.0 * u_point_radius, u_max_point_size);
        gl_Position = pixel_to_clip(v_mean2d);
#else
        gl_Position = pixel_to_clip(v_mean2d + quad_corner() * u_point_radius);
#endif
        return;
    }
    if (u_mode == 4 && center.w < u_ellipse_min_opacity) {
        gl_Position = CULLED;
        return;
    }

    float lim_x_pos = (u_viewport.x - cx) / fx + FOV_MARGIN * 0.5 * u_viewport.x / fx;
    float lim_x_neg = cx / fx + FOV_MARGIN * 0.5 * u_viewport.x / fx;
    float lim_y_pos = (u_viewport.y - cy) / fy + FOV_MARGIN * 0.5 * u_viewport.y / fy;
    float lim_y_neg = cy / fy + FOV_MARGIN * 0.5 * u_viewport.y / fy;
    float x_over_z = clamp(t.x / t.z, -lim_x_neg, lim_x_pos);
    float y_over_z = clamp(t.y / t.z, -lim_y_neg, lim_y_pos);

    mat3 sigma = mat3(cov_a.x, cov_a.y, cov_a.z,
                      cov_a.y, cov_a.w, cov_b.x,
                      cov_a.z, cov_b.x, cov_b.y);
    mat3 rotation = mat3(u_w2c);
    mat3 sigma_cam = rotation * sigma * transpose(rotation);
    // Rows of the EWA Jacobian J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]].
    vec3 j_u = vec3(fx / t.z, 0.0, -fx * x_over_z / t.z);
    vec3 j_v = vec3(0.0, fy / t.z, -fy * y_over_z / t.z);
    float a = dot(j_u, sigma_cam * j_u) + LOW_PASS;
    float b = dot(j_u, sigma_cam * j_v);
    float c = dot(j_v, sigma_cam * j_v) + LOW_PASS;
    float det = a * c - b * b;
    if (!(det > 0.0)) {
        gl_Position = CULLED;
        return;
    }
    v_conic = vec3(c, -b, a) / det;

    // Ellipse-aligned quad: the eigenvectors of cov2d scaled by k sqrt(eigenvalue) bound the k sigma
    // ellipse exactly, so every pixel centre inside it is rasterised (the fragment shader cuts the
    // corners). k = 3, or less where opacity * exp(-k^2 / 2) < 1/255 already (those fragments would be
    // discarded anyway): fewer fragments for faint splats, the same image.
    float extent = SIGMA_EXTENT;
    if (u_mode != 4) {
        float log_ratio = log(center.w / MIN_ALPHA);
        if (!(log_ratio > 0.0)) {
            gl_Position = CULLED;
            return;
        }
        extent = min(SIGMA_EXTENT, sqrt(2.0 * log_ratio) * 1.0001);
    }
    float mid = 0.5 * (a + c);
    float half_gap = length(vec2(0.5 * (a - c), b));
    float lambda_major = mid + half_gap;
    float lambda_minor = max(mid - half_gap, 0.0);
    vec2 axis_major = abs(b) > 1e-12 * mid ? normalize(vec2(b, lambda_major - a))
                                            : (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
    vec2 axis_minor = vec2(-axis_major.y, axis_major.x);
    float radius = extent * sqrt(lambda_major);
    if (v_mean2d.x + radius <= 0.0 || v_mean2d.x - radius >= u_viewport.x ||
        v_mean2d.y + radius <= 0.0 || v_mean2d.y - radius >= u_viewport.y) {
        gl_Position = CULLED;
        return;
    }
#ifdef POINT_SPRITES
    // The axis-aligned box of the k sigma ellipse has half sides k sqrt(a) and k sqrt(c).
    gl_PointSize = min(2.0 * extent * sqrt(max(a, c)) + 1.0, u_max_point_size);
    gl_Position = pixel_to_clip(v_mean2d);
#else
    vec2 corner = quad_corner();
    vec2 offset = corner.x * radius * axis_major + corner.y * extent * sqrt(lambda_minor) * axis_minor;
    gl_Position = pixel_to_clip(v_mean2d + offset);
#endif
}
