//! The speedup chart of `compare`: horizontal bars of Dask's time ÷ shoal's,
//! per case and Dask mode, on a log scale, drawn with plotters' SVG backend
//! (no font library: the SVG holds text elements that the viewer renders).

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One bar: a series (a Dask mode) and its speedup.
pub struct Bar {
    pub series: String,
    pub value: f64,
    /// Shown after the value, e.g. why a bar is special.
    pub note: Option<String>,
}

/// One case's bars.
pub struct Group {
    pub label: String,
    pub bars: Vec<Bar>,
}

const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
const FONT: &str = "sans-serif";

/// Write the chart to `path` (SVG).
pub fn speedup(path: &Path, groups: &[Group], subtitle: &str) -> Result<(), Box<dyn Error>> {
    let mut series: Vec<&str> = Vec::new();
    for b in groups.iter().flat_map(|g| &g.bars) {
        if !series.contains(&b.series.as_str()) {
            series.push(&b.series);
        }
    }
    let n = groups.len().max(1);
    let (width, height) = (960u32, 130 + 38 * (n * series.len().max(1)) as u32 + 14 * n as u32);
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(64);
    head.draw(&Text::new(
        "shoal vs Dask: how many times faster shoal is (Dask's time ÷ shoal's)",
        (20, 12),
        (FONT, 22).into_font().style(FontStyle::Bold),
    ))?;
    head.draw(&Text::new(subtitle.to_string(), (20, 40), (FONT, 14).into_font().color(&RGBColor(90, 90, 90))))?;

    let values: Vec<f64> = groups.iter().flat_map(|g| &g.bars).map(|b| b.value).filter(|v| v.is_finite()).collect();
    if values.is_empty() || series.is_empty() {
        body.draw(&Text::new("No Dask figures in this run: nothing to compare.", (20, 30), (FONT, 18)))?;
        root.present()?;
        return Ok(());
    }
    // Powers of ten around every value and 1×, with room right of the longest bar for its label.
    let lo = 10f64.powf(values.iter().copied().fold(1.0, f64::min).log10().floor());
    let hi = 10f64.powf((values.iter().copied().fold(1.0, f64::max) * 6.0).log10().ceil());

    // Group i (top to bottom) spans y in [n-1-i, n-i); its bars share 80% of it.
    let mut chart = ChartBuilder::on(&body)
        .margin_left(10)
        .margin_right(30)
        .margin_bottom(10)
        .x_label_area_size(48)
        .y_label_area_size(130)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .x_desc("Dask's time ÷ shoal's time (log scale; right of 1× = shoal faster)")
        .x_label_formatter(&|v| times(*v))
        .y_labels(0)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 15))
        .draw()?;

    // Parity.
    chart.draw_series(std::iter::once(PathElement::new(vec![(1.0, 0.0), (1.0, n as f64)], BLACK.stroke_width(1))))?;

    let k = series.len() as f64;
    for (s, name) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let mut rects = Vec::new();
        let mut labels = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            let Some(b) = g.bars.iter().find(|b| b.series == *name) else { continue };
            let top = (n - i) as f64 - 0.1 - s as f64 * 0.8 / k;
            let bottom = top - 0.8 / k + 0.04;
            rects.push(Rectangle::new([(1.0, bottom), (b.value, top)], color.filled()));
            let mut text = times(b.value);
            if let Some(note) = &b.note {
                text.push_str(&format!(" ({note})"));
            }
            // Right of the bar's end; a bar left of 1× gets its label right of the 1× line.
            labels.push(
                EmptyElement::at((b.value.max(1.0), (top + bottom) / 2.0))
                    + Text::new(
                        text,
                        (6, 0),
                        TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
                    ),
            );
        }
        chart
            .draw_series(rects)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled()));
        chart.draw_series(labels)?;
    }
    // The case names, left of the plot (plotters' own labels need evenly spaced ticks).
    for (i, g) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(lo, (n - i) as f64 - 0.5));
        let style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(g.label.clone(), (x - 10, y), style))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 15))
        .draw()?;
    root.present()?;
    Ok(())
}

/// `1234×`, `56×`, `2.5×`, `0.01×`.
fn times(v: f64) -> String {
    if v >= 10.0 || (v >= 1.0 && (v - v.round()).abs() < 1e-9) {
        format!("{v:.0}×")
    } else if v >= 1.0 {
        format!("{v:.1}×")
    } else {
        // Two significant digits, no trailing zeros: 0.15×, 0.1×, 0.002×.
        let digits = (-v.log10()).ceil().max(1.0) as usize + 1;
        let s = format!("{v:.digits$}");
        format!("{}×", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(times(1.0), "1×");
        assert_eq!(times(2.5), "2.5×");
        assert_eq!(times(1621.4), "1621×");
        assert_eq!(times(0.1), "0.1×");
        assert_eq!(times(0.15), "0.15×");
        assert_eq!(times(0.002), "0.002×");
    }

    #[test]
    fn draws_bars_labels_and_an_empty_chart() {
        let dir = std::env::temp_dir().join(format!("shoal-chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bar = |series: &str, value: f64, note: Option<&str>| Bar {
            series: series.into(),
            value,
            note: note.map(str::to_string),
        };
        let groups = vec![
            Group {
                label: "map + gather".into(),
                bars: vec![bar("Dask processes", 1621.0, None), bar("Dask threads", 2092.0, None)],
            },
            Group {
                label: "transfer".into(),
                bars: vec![bar("Dask processes", 4.1, None), bar("Dask threads", 0.15, Some("nothing moves"))],
            },
        ];
        let path = dir.join("speedup.svg");
        speedup(&path, &groups, "test run").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in ["map + gather", "transfer", "1621×", "0.15× (nothing moves)", "Dask threads", "test run"] {
            assert!(svg.contains(text), "{text} missing from the chart");
        }
        let empty = dir.join("empty.svg");
        speedup(&empty, &[Group { label: "chain".into(), bars: vec![] }], "no dask").unwrap();
        assert!(std::fs::read_to_string(&empty).unwrap().contains("No Dask figures"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
