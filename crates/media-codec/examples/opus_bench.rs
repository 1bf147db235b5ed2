//! Opus library benchmark for the gateway's workload: mono voice, 20 ms frames, 8 kHz PCM in
//! and out, VOIP application, 24 kbit/s. Compares libopus (through `audiopus`, the library
//! `media-codec` uses) with the pure-Rust `opus-rs`, checks that each decodes the other's
//! packets, and times the whole `media-codec` transcoding path (G.711 ⇄ Opus).
//!
//! `cargo run --release -p media-codec --example opus_bench [-- --seconds N]`
//!
//! Timings are the benchmark thread's CPU time per 20 ms frame over a generated signal (a
//! voice-like pitched, formant-filtered pulse train with syllable envelope and pauses); each
//! figure is the minimum and the median of 7 repetitions of at least 0.4 s of CPU each.
// Bench arithmetic on fixed-size, locally built buffers; a slip is a bench bug, not input.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use audiopus::{
    Application, Bitrate, Channels, SampleRate,
    coder::{Decoder as LibDecoder, Encoder as LibEncoder},
};
use media_codec::{G711Law, G711ToOpus, OpusToG711, TranscoderConfig};

const RATE: usize = 8000;
const FRAME: usize = 160; // 20 ms at 8 kHz
const BITRATE: i32 = 24_000;
const REPS: usize = 7;

fn main() {
    let seconds = parse_seconds();
    let voice = voice_like(seconds * RATE);
    let sine = sine_1k(seconds * RATE);
    let frames = voice.len() / FRAME;
    println!(
        "opus bench: mono, 8 kHz PCM in/out, 20 ms frames, VOIP, {} kbit/s VBR; {} s signal = {} frames; CPU µs per frame, min / median of {} repetitions",
        BITRATE / 1000,
        seconds,
        frames,
        REPS
    );
    println!(
        "libopus {} via audiopus 0.2 (system library, pkg-config); opus-rs 0.1 (pure Rust)",
        libopus_version()
    );

    let lib_default = LibEncoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip)
        .unwrap()
        .complexity()
        .unwrap();
    println!(
        "default complexity: libopus {lib_default}, opus-rs {}",
        RsDefault::complexity()
    );
    println!();
    println!(
        "| library | complexity | encode µs/frame | decode µs/frame | enc+dec µs | calls/core (enc+dec) | kbit/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for complexity in [None, Some(5), Some(1)] {
        let lib = bench_libopus(&voice, complexity);
        let rs = bench_opus_rs(&voice, complexity);
        for (name, c, r) in [
            ("libopus", complexity.unwrap_or(lib_default), lib),
            ("opus-rs", complexity.unwrap_or(RsDefault::complexity()), rs),
        ] {
            println!(
                "| {name} | {c}{} | {} | {} | {:.1} | {:.0} | {:.1} |",
                if complexity.is_none() {
                    " (default)"
                } else {
                    ""
                },
                r.encode,
                r.decode,
                r.encode.min + r.decode.min,
                20_000.0 / (r.encode.min + r.decode.min),
                r.kbps
            );
        }
    }

    println!();
    println!(
        "interop (default complexity): best-lag normalised correlation / SNR dB of decoded vs input, after 200 ms"
    );
    println!(
        "| encoder → decoder | 1 kHz sine corr | sine SNR dB | lag | voice-like corr | voice SNR dB | lag |"
    );
    println!("|---|---|---|---|---|---|---|");
    let lib_sine = lib_encode(&sine, None);
    let lib_voice = lib_encode(&voice, None);
    let rs_sine = rs_encode(&sine, None);
    let rs_voice = rs_encode(&voice, None);
    for (name, s_packets, v_packets, decode) in [
        (
            "libopus → libopus",
            &lib_sine,
            &lib_voice,
            lib_decode as Dec,
        ),
        ("libopus → opus-rs", &lib_sine, &lib_voice, rs_decode as Dec),
        ("opus-rs → libopus", &rs_sine, &rs_voice, lib_decode as Dec),
        ("opus-rs → opus-rs", &rs_sine, &rs_voice, rs_decode as Dec),
    ] {
        let s = compare(&sine, &decode(s_packets));
        let v = compare(&voice, &decode(v_packets));
        println!(
            "| {name} | {:.4} | {:.1} | {} | {:.4} | {:.1} | {} |",
            s.corr, s.snr_db, s.lag, v.corr, v.snr_db, v.lag
        );
    }

    println!(
        "bit rate on the sine: libopus {:.1} kbit/s, opus-rs {:.1} kbit/s",
        kbps(&lib_sine),
        kbps(&rs_sine)
    );

    println!();
    let cases = 200_000;
    println!(
        "robustness: {cases} damaged packets (bit flips, truncation, random bytes, random TOC) from both encoders' voice packets, one decoder each carrying state"
    );
    let seeds: Vec<Vec<u8>> = lib_voice.iter().chain(rs_voice.iter()).cloned().collect();
    fuzz_decoders(&seeds, cases);

    println!();
    println!(
        "media-codec transcoder (libopus, default complexity): G.711 µ-law 20 ms ⇄ Opus, per frame"
    );
    let ulaw: Vec<u8> = voice
        .iter()
        .map(|&s| media_proto::g711::linear_to_ulaw(s))
        .collect();
    let config = TranscoderConfig::default();
    let mut to_opus = G711ToOpus::new(G711Law::Ulaw, &config, 0).unwrap();
    let mut ts8 = 0u32;
    let mut packets = Vec::new();
    let e = measure(|| {
        packets.clear();
        for chunk in ulaw.chunks_exact(FRAME) {
            let out = to_opus.transcode(ts8, chunk).unwrap();
            ts8 = ts8.wrapping_add(FRAME as u32);
            packets.extend(out);
        }
        frames
    });
    let mut to_g711 = OpusToG711::new(G711Law::Ulaw, 0).unwrap();
    let d = measure(|| {
        for p in &packets {
            let out = to_g711.transcode(p.timestamp, &p.payload).unwrap();
            std::hint::black_box(out);
        }
        packets.len()
    });
    println!(
        "G711ToOpus {e} µs/frame, OpusToG711 {d} µs/frame; one call (both directions) {:.1} µs per 20 ms = {:.0} calls per core",
        e.min + d.min,
        20_000.0 / (e.min + d.min)
    );
}

/// Feeds damaged packets to both decoders. libopus is C: a fault would kill the process, so
/// finishing is its result. opus-rs panics are caught and counted (the decoder is rebuilt).
fn fuzz_decoders(seeds: &[Vec<u8>], cases: usize) {
    static FIRST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    std::panic::set_hook(Box::new(|info| {
        let mut first = FIRST_PANIC.lock().unwrap();
        if first.is_none() {
            *first = Some(info.to_string());
        }
    }));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut lib = LibDecoder::new(SampleRate::Hz8000, Channels::Mono).unwrap();
    let mut rs = opus_rs::OpusDecoder::new(8000, 1).unwrap();
    let (mut lib_ok, mut lib_err) = (0, 0);
    let (mut rs_ok, mut rs_err, mut rs_panic) = (0, 0, 0);
    let mut out = [0i16; 960];
    let mut outf = [0f32; 960];
    for _ in 0..cases {
        let base = &seeds[(next() % seeds.len() as u64) as usize];
        let mut p = base.clone();
        match next() % 4 {
            0 => {
                for _ in 0..=(next() % 4) {
                    let bit = (next() % (p.len() as u64 * 8)) as usize;
                    p[bit / 8] ^= 1 << (bit % 8);
                }
            }
            1 => p.truncate(1 + (next() % p.len() as u64) as usize),
            2 => {
                let n = 1 + (next() % 200) as usize;
                p = (0..n).map(|_| next() as u8).collect();
            }
            _ => p[0] = next() as u8,
        }
        match lib.decode(Some(&p[..]), &mut out[..], false) {
            Ok(_) => lib_ok += 1,
            Err(_) => lib_err += 1,
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rs.decode(&p, 960, &mut outf)
        }));
        match r {
            Ok(Ok(_)) => rs_ok += 1,
            Ok(Err(_)) => rs_err += 1,
            Err(_) => {
                rs_panic += 1;
                rs = opus_rs::OpusDecoder::new(8000, 1).unwrap();
            }
        }
    }
    let _ = std::panic::take_hook();
    println!("libopus: {lib_ok} decoded, {lib_err} refused, no crash");
    println!("opus-rs: {rs_ok} decoded, {rs_err} refused, {rs_panic} panicked");
    if let Some(first) = FIRST_PANIC.lock().unwrap().take() {
        println!("opus-rs first panic: {first}");
    }
}

fn parse_seconds() -> usize {
    let mut args = std::env::args().skip(1);
    let mut seconds = 20;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|s| (1..=600).contains(s))
                    .expect("--seconds takes 1..=600");
            }
            other => {
                eprintln!("usage: opus_bench [--seconds N]; unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    seconds
}

fn libopus_version() -> String {
    // pkg-config's view of the linked library; the build script linked the same one.
    std::process::Command::new("pkg-config")
        .args(["--modversion", "opus"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

struct RsDefault;
impl RsDefault {
    fn complexity() -> u8 {
        let e = opus_rs::OpusEncoder::new(8000, 1, opus_rs::Application::Voip).unwrap();
        e.complexity as u8
    }
}

#[derive(Clone, Copy)]
struct Stat {
    min: f64,
    median: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Stat {
        v.sort_by(f64::total_cmp);
        Stat {
            min: v[0],
            median: v[v.len() / 2],
        }
    }
}

impl std::fmt::Display for Stat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} / {:.1}", self.min, self.median)
    }
}

struct Result3 {
    encode: Stat,
    decode: Stat,
    kbps: f64,
}

/// CPU time of this thread so far, in ns (`/proc/thread-self/schedstat`, first field): unlike
/// wall-clock time it leaves out the time other processes held the CPU.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

/// The thread's CPU time advances in scheduler ticks (4 ms here), so each repetition runs
/// whole passes over the signal until it has used at least this much.
const MIN_REP_NS: u64 = 400_000_000;

/// Runs `pass` (one pass over the signal, returning its frame count) until a repetition has
/// used `MIN_REP_NS` of CPU, `REPS` times; µs of CPU per frame, min and median.
fn measure(mut pass: impl FnMut() -> usize) -> Stat {
    let mut per_frame = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let start = cpu_ns();
        let mut frames = 0;
        while cpu_ns() - start < MIN_REP_NS {
            frames += pass();
        }
        per_frame.push((cpu_ns() - start) as f64 / 1e3 / frames as f64);
    }
    Stat::of(per_frame)
}

fn lib_encoder(complexity: Option<u8>) -> LibEncoder {
    let mut e = LibEncoder::new(SampleRate::Hz8000, Channels::Mono, Application::Voip).unwrap();
    e.set_bitrate(Bitrate::BitsPerSecond(BITRATE)).unwrap();
    if let Some(c) = complexity {
        e.set_complexity(c).unwrap();
    }
    e
}

fn rs_encoder(complexity: Option<u8>) -> opus_rs::OpusEncoder {
    let mut e = opus_rs::OpusEncoder::new(8000, 1, opus_rs::Application::Voip).unwrap();
    e.bitrate_bps = BITRATE;
    if let Some(c) = complexity {
        e.complexity = i32::from(c);
    }
    e
}

fn lib_encode(pcm: &[i16], complexity: Option<u8>) -> Vec<Vec<u8>> {
    let e = lib_encoder(complexity);
    let mut buf = [0u8; 1500];
    pcm.chunks_exact(FRAME)
        .map(|f| {
            let n = e.encode(f, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

fn rs_encode(pcm: &[i16], complexity: Option<u8>) -> Vec<Vec<u8>> {
    let mut e = rs_encoder(complexity);
    let mut buf = [0u8; 1500];
    pcm.chunks_exact(FRAME)
        .map(|f| {
            let n = e.encode_i16(f, FRAME, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

type Dec = fn(&[Vec<u8>]) -> Vec<i16>;

fn lib_decode(packets: &[Vec<u8>]) -> Vec<i16> {
    let mut d = LibDecoder::new(SampleRate::Hz8000, Channels::Mono).unwrap();
    let mut out = vec![0i16; packets.len() * FRAME];
    for (p, o) in packets.iter().zip(out.chunks_exact_mut(FRAME)) {
        let n = d.decode(Some(&p[..]), o, false).unwrap();
        assert_eq!(n, FRAME);
    }
    out
}

fn rs_decode(packets: &[Vec<u8>]) -> Vec<i16> {
    let mut d = opus_rs::OpusDecoder::new(8000, 1).unwrap();
    let mut f = [0f32; FRAME];
    let mut out = vec![0i16; packets.len() * FRAME];
    for (p, o) in packets.iter().zip(out.chunks_exact_mut(FRAME)) {
        let n = d.decode(p, FRAME, &mut f).unwrap();
        assert_eq!(n, FRAME);
        f32_to_i16(&f, o);
    }
    out
}

fn f32_to_i16(f: &[f32], o: &mut [i16]) {
    for (s, d) in f.iter().zip(o) {
        *d = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
    }
}

fn bench_libopus(pcm: &[i16], complexity: Option<u8>) -> Result3 {
    let packets = lib_encode(pcm, complexity);
    let mut buf = [0u8; 1500];
    let e = lib_encoder(complexity);
    let encode = measure(|| {
        for f in pcm.chunks_exact(FRAME) {
            let n = e.encode(f, &mut buf).unwrap();
            std::hint::black_box(&buf[..n]);
        }
        pcm.len() / FRAME
    });
    let mut out = [0i16; FRAME];
    let mut d = LibDecoder::new(SampleRate::Hz8000, Channels::Mono).unwrap();
    let decode = measure(|| {
        for p in &packets {
            let n = d.decode(Some(&p[..]), &mut out[..], false).unwrap();
            std::hint::black_box((n, &out));
        }
        packets.len()
    });
    Result3 {
        encode,
        decode,
        kbps: kbps(&packets),
    }
}

fn bench_opus_rs(pcm: &[i16], complexity: Option<u8>) -> Result3 {
    let packets = rs_encode(pcm, complexity);
    let mut buf = [0u8; 1500];
    let mut e = rs_encoder(complexity);
    let encode = measure(|| {
        for f in pcm.chunks_exact(FRAME) {
            let n = e.encode_i16(f, FRAME, &mut buf).unwrap();
            std::hint::black_box(&buf[..n]);
        }
        pcm.len() / FRAME
    });
    let mut f = [0f32; FRAME];
    let mut out = [0i16; FRAME];
    let mut d = opus_rs::OpusDecoder::new(8000, 1).unwrap();
    let decode = measure(|| {
        for p in &packets {
            // opus-rs decodes to f32 only; the conversion to i16 for G.711 is part of its cost.
            let n = d.decode(p, FRAME, &mut f).unwrap();
            f32_to_i16(&f, &mut out);
            std::hint::black_box((n, &out));
        }
        packets.len()
    });
    Result3 {
        encode,
        decode,
        kbps: kbps(&packets),
    }
}

fn kbps(packets: &[Vec<u8>]) -> f64 {
    packets.iter().map(Vec::len).sum::<usize>() as f64 * 8.0
        / (packets.len() as f64 * 0.02)
        / 1000.0
}

struct Cmp {
    corr: f64,
    snr_db: f64,
    lag: usize,
}

/// Best-lag comparison: Opus delays its output by a few ms (encoder lookahead plus the decoder's
/// resampler), so the decoded signal is compared against the input shifted by every lag up to
/// 30 ms and the best normalised correlation wins. SNR is taken at that lag, with the decoded
/// signal scaled by the least-squares gain so a level change alone does not count as noise.
fn compare(input: &[i16], decoded: &[i16]) -> Cmp {
    let skip = RATE / 5;
    let mut best = Cmp {
        corr: -1.0,
        snr_db: f64::NEG_INFINITY,
        lag: 0,
    };
    for lag in 0..=(RATE * 30 / 1000) {
        let n = decoded.len().min(input.len() + lag) - skip;
        let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
        for i in skip..skip + n - lag {
            let x = f64::from(input[i]);
            let y = f64::from(decoded[i + lag]);
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        let corr = xy / (xx * yy).sqrt().max(1e-9);
        if corr > best.corr {
            let gain = xy / yy.max(1e-9);
            let noise = xx - 2.0 * gain * xy + gain * gain * yy;
            best = Cmp {
                corr,
                snr_db: 10.0 * (xx / noise.max(1e-9)).log10(),
                lag,
            };
        }
    }
    best
}

/// A 1 kHz sine at -10 dBFS.
fn sine_1k(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            (10_362.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16
        })
        .collect()
}

/// A voice-like test signal: a glottal pulse train whose pitch glides between 100 and 180 Hz,
/// through two formant resonators (≈ 700 and 1,200 Hz, drifting), gated by a 4 Hz syllable
/// envelope with a pause every 2 s so VAD/DTX-like paths run too. Deterministic, no RNG.
fn voice_like(n: usize) -> Vec<i16> {
    let fs = RATE as f64;
    let mut phase = 0f64;
    let mut out = Vec::with_capacity(n);
    let mut r1 = Resonator::default();
    let mut r2 = Resonator::default();
    let mut peak = 0f64;
    let mut raw = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / fs;
        let f0 = 140.0 + 40.0 * (2.0 * std::f64::consts::PI * 0.3 * t).sin();
        phase += f0 / fs;
        let pulse = if phase >= 1.0 {
            phase -= 1.0;
            1.0
        } else {
            0.0
        };
        let f1 = 700.0 + 150.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
        let f2 = 1200.0 + 300.0 * (2.0 * std::f64::consts::PI * 0.45 * t).cos();
        let y = r1.step(pulse, f1, 80.0, fs) + 0.6 * r2.step(pulse, f2, 120.0, fs);
        let syllable = (2.0 * std::f64::consts::PI * 4.0 * t).sin().max(0.0);
        let pause = if (t % 2.0) > 1.6 { 0.0 } else { 1.0 };
        let v = y * syllable * pause;
        peak = f64::max(peak, v.abs());
        raw.push(v);
    }
    for v in raw {
        out.push((v / peak.max(1e-9) * 20_000.0) as i16);
    }
    out
}

#[derive(Default)]
struct Resonator {
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn step(&mut self, x: f64, freq: f64, bw: f64, fs: f64) -> f64 {
        let r = (-std::f64::consts::PI * bw / fs).exp();
        let a1 = 2.0 * r * (2.0 * std::f64::consts::PI * freq / fs).cos();
        let a2 = -r * r;
        let y = x + a1 * self.y1 + a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}
