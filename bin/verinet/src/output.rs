//! Plain-text tables for humans; `--json` everywhere for machines.

use verinet_primitives::{IoSignature, TensorMap};

pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn print_io(io: &IoSignature) {
    if !io.kind.is_onnx() {
        println!("  kind     {}", io.kind);
    }
    if let Some(serde_json::Value::Object(facts)) = &io.language {
        for (k, v) in facts {
            println!("  {k:<8} {v}");
        }
    }
    for s in &io.inputs {
        println!("  input    {s}");
    }
    for s in &io.outputs {
        println!("  output   {s}");
    }
}

/// Each output with its first values; a row of scores also gets its argmax.
pub fn print_tensors(outputs: &TensorMap) {
    let rows: Vec<Vec<String>> = outputs
        .iter()
        .map(|(name, t)| {
            let vals = t.to_f64_vec();
            let shown: Vec<String> = vals.iter().take(10).map(|v| fmt_num(*v, t.dtype().is_float())).collect();
            let more = if vals.len() > 10 { format!(" … ({} values)", vals.len()) } else { String::new() };
            let argmax = (t.dtype().is_float() && t.shape().last().copied().unwrap_or(0) > 1)
                .then(|| {
                    let row = t.shape().last().copied().unwrap_or(1);
                    let first = &vals[..row.min(vals.len())];
                    first.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i.to_string())
                })
                .flatten()
                .unwrap_or_default();
            vec![name.clone(), t.dtype().to_string(), format!("{:?}", t.shape()), argmax, format!("[{}{more}]", shown.join(", "))]
        })
        .collect();
    table(&["OUTPUT", "DTYPE", "SHAPE", "ARGMAX", "VALUES"], &rows);
}

fn fmt_num(v: f64, float: bool) -> String {
    if float { format!("{v:.4}") } else { format!("{v}") }
}
