//! Heap allocations on the hot path, counted with a counting global
//! allocator. Preprocessing and mapping must not allocate; inference
//! allocations depend on the engine and are printed for the report.

mod common;

use common::*;
use policy::preprocess::{InputSpec, Layout, Preprocessor};
use policy::{ActionMapper, Backend, BackendChoice, Frame, Model, PixelFormat};

#[global_allocator]
static GLOBAL: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;

use test_support::alloc::per_call as count;

// One test function: the inference figure is counted process-wide.
#[test]
fn hot_path_allocations() {
    let spec = InputSpec::deepracer();
    let mut out = vec![0f32; spec.len()];
    for (fmt, bpp) in [
        (PixelFormat::Gray8, 1),
        (PixelFormat::Rgb8, 3),
        (PixelFormat::Yuyv, 2),
    ] {
        for layout in [Layout::Nhwc, Layout::Nchw] {
            let data = vec![128u8; 640 * 480 * bpp];
            let spec = InputSpec { layout, ..spec };
            let mut p = Preprocessor::new(640, 480, fmt, spec).unwrap();
            let f = Frame {
                data: &data,
                format: fmt,
                width: 640,
                height: 480,
                timestamp_ns: 0,
                seq: 0,
            };
            let a = count(20, || p.run(&f, &mut out).unwrap());
            assert_eq!(a, 0.0, "Preprocessor::run allocates for {fmt:?} {layout:?}");
        }
    }
    let m = ActionMapper::new(&discrete(9));
    let outs = [0.1f32; 9];
    assert_eq!(
        count(100, || {
            std::hint::black_box(m.map(&outs, 0.5));
        }),
        0.0
    );
    let c = ActionMapper::new(&continuous());
    assert_eq!(
        count(100, || {
            std::hint::black_box(c.map(&[0.2, -0.3], 0.5));
        }),
        0.0
    );

    let b = Backend::init(BackendChoice::Tract, None).unwrap();
    let t = tempfile::tempdir().unwrap();
    let d = shallow_dir(&t.path().join("m"), Layout::Nhwc, discrete(9), 1);
    let mut model = Model::load(&d, &b).unwrap();
    let img = image_160x120();
    let mut o = vec![0f32; 9];
    let a =
        test_support::alloc::per_call_in_process(10, || model.policy.infer(&img, &mut o).unwrap());
    println!("allocations per Policy::infer (tract, whole process): {a}");
}
