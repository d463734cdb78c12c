//! The chart of the closed-loop runs on the hot showtime: successful holds/s and p99 hold
//! latency against clients, one line per design and seat choice, written as a plain SVG (no
//! plotting crate: two log-log panels are a few dozen lines, and nothing needs fonts).

use crate::load::Choice;
use crate::outcome::Outcome;
use crate::target::Design;
use std::fmt::Write;
use std::path::Path;

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 300.0;
const MARGIN: f64 = 60.0;

/// One plotted line: a design and seat choice, (clients, value) in client order.
struct Series {
    design: Design,
    choice: Choice,
    points: Vec<(f64, f64)>,
}

/// Writes the chart to `path`.
pub fn write(path: &Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let hot: Vec<&Outcome> = outcomes.iter().filter(|o| o.showtimes == 1).collect();
    let holds = series(&hot, Outcome::holds_per_second);
    let p99 = series(&hot, |o| o.tally.ms(0.99));
    let mut svg = String::new();
    let width = 2.0 * (PANEL_W + 2.0 * MARGIN);
    let height = PANEL_H + 2.0 * MARGIN + 60.0;
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    panel(&mut svg, 0.0, "successful holds/s", &holds)?;
    panel(
        &mut svg,
        PANEL_W + 2.0 * MARGIN,
        "p99 hold latency, ms",
        &p99,
    )?;
    legend(&mut svg, &holds, PANEL_H + 2.0 * MARGIN)?;
    svg.push_str("</svg>\n");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg)?;
    Ok(())
}

/// The mean of `value` per (design, choice, clients).
fn series(outcomes: &[&Outcome], value: impl Fn(&Outcome) -> f64) -> Vec<Series> {
    let mut all: Vec<Series> = Vec::new();
    for o in outcomes {
        let i = match all
            .iter()
            .position(|s| s.design == o.design && s.choice == o.choice)
        {
            Some(i) => i,
            None => {
                all.push(Series {
                    design: o.design,
                    choice: o.choice,
                    points: Vec::new(),
                });
                all.len() - 1
            }
        };
        all[i].points.push((o.clients as f64, value(o)));
    }
    for s in &mut all {
        s.points = mean_by_x(&s.points);
    }
    all
}

fn mean_by_x(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.into_iter()
        .map(|x| {
            let ys: Vec<f64> = points.iter().filter(|p| p.0 == x).map(|p| p.1).collect();
            (x, ys.iter().sum::<f64>() / ys.len() as f64)
        })
        .collect()
}

/// A log scale over the decades that cover `values`.
struct LogScale {
    lo: f64,
    hi: f64,
}

impl LogScale {
    fn covering(values: impl Iterator<Item = f64>) -> Self {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for v in values.filter(|v| *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            (lo, hi) = (1.0, 10.0);
        }
        let lo = 10f64.powf(lo.log10().floor());
        let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
        Self { lo, hi }
    }

    /// Where `v` falls, 0 to 1 (values at or below zero are drawn at the bottom).
    fn at(&self, v: f64) -> f64 {
        (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
    }

    fn decades(&self) -> Vec<f64> {
        let mut d = vec![self.lo];
        while *d.last().expect("not empty") < self.hi * 0.999 {
            d.push(d.last().expect("not empty") * 10.0);
        }
        d
    }
}

fn colour(design: Design) -> &'static str {
    match design {
        Design::E => "#1f77b4",
        Design::N1 => "#d62728",
        Design::N2 => "#2ca02c",
        Design::R => "#ff7f0e",
    }
}

fn dash(choice: Choice) -> &'static str {
    match choice {
        Choice::Uniform => "",
        Choice::Zipf => r#" stroke-dasharray="6 4""#,
    }
}

/// A panel's place on the page and its two scales.
struct Frame {
    x0: f64,
    y0: f64,
    xs: LogScale,
    ys: LogScale,
}

impl Frame {
    /// Where clients `x` fall across the panel.
    fn px(&self, x: f64) -> f64 {
        self.x0 + self.xs.at(x) * PANEL_W
    }

    /// Where value `y` falls up the panel.
    fn py(&self, y: f64) -> f64 {
        self.y0 + PANEL_H - self.ys.at(y) * PANEL_H
    }
}

fn panel(svg: &mut String, left: f64, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let frame = Frame {
        x0: left + MARGIN,
        y0: MARGIN,
        xs: LogScale::covering(series.iter().flat_map(|s| s.points.iter().map(|p| p.0))),
        ys: LogScale::covering(series.iter().flat_map(|s| s.points.iter().map(|p| p.1))),
    };
    outline(svg, &frame, title)?;
    value_axis(svg, &frame)?;
    clients_axis(svg, &frame, series)?;
    for s in series {
        line(svg, &frame, s)?;
    }
    Ok(())
}

/// The panel's title and border.
fn outline(svg: &mut String, frame: &Frame, title: &str) -> anyhow::Result<()> {
    let (x0, y0) = (frame.x0, frame.y0);
    writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{title} (log scale)</text>"#,
        x0 + PANEL_W / 2.0,
        y0 - 20.0
    )?;
    writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    )?;
    Ok(())
}

/// A grid line and label at each decade of the values.
fn value_axis(svg: &mut String, frame: &Frame) -> anyhow::Result<()> {
    let x0 = frame.x0;
    for d in frame.ys.decades() {
        let y = frame.py(d);
        writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{d}</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            y + 4.0
        )?;
    }
    Ok(())
}

/// A grid line and label at each client count measured, and the axis's name.
fn clients_axis(svg: &mut String, frame: &Frame, series: &[Series]) -> anyhow::Result<()> {
    let (x0, y0) = (frame.x0, frame.y0);
    let mut clients: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    clients.sort_by(f64::total_cmp);
    clients.dedup();
    for c in clients {
        let x = frame.px(c);
        writeln!(
            svg,
            r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{c}</text>"##,
            y0 + PANEL_H,
            y0 + PANEL_H + 16.0
        )?;
    }
    writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">clients</text>"#,
        x0 + PANEL_W / 2.0,
        y0 + PANEL_H + 34.0
    )?;
    Ok(())
}

/// One series as a line with a dot at each point.
fn line(svg: &mut String, frame: &Frame, s: &Series) -> anyhow::Result<()> {
    let points: Vec<String> = s
        .points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", frame.px(x), frame.py(y)))
        .collect();
    writeln!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{}/>"#,
        points.join(" "),
        colour(s.design),
        dash(s.choice)
    )?;
    for &(x, y) in &s.points {
        writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
            frame.px(x),
            frame.py(y),
            colour(s.design)
        )?;
    }
    Ok(())
}

fn legend(svg: &mut String, series: &[Series], top: f64) -> anyhow::Result<()> {
    for (i, s) in series.iter().enumerate() {
        let x = MARGIN + (i % 4) as f64 * 200.0;
        let y = top + 20.0 * (i / 4) as f64;
        writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{}/><text x="{}" y="{}">{:?}, {:?} seats</text>"#,
            x + 30.0,
            colour(s.design),
            dash(s.choice),
            x + 36.0,
            y + 4.0,
            s.design,
            s.choice
        )?;
    }
    Ok(())
}
