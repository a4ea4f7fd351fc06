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

/// Each output with its first values; scores (a float tensor whose last axis has more than one
/// entry) also get the argmax of each row along that axis: `[5, 3]` probabilities show five
/// classes.
pub fn print_tensors(outputs: &TensorMap) {
    let rows: Vec<Vec<String>> = outputs
        .iter()
        .map(|(name, t)| {
            let vals = t.to_f64_vec();
            let shown: Vec<String> = vals.iter().take(10).map(|v| fmt_num(*v, t.dtype().is_float())).collect();
            let more = if vals.len() > 10 { format!(" … ({} values)", vals.len()) } else { String::new() };
            let argmax = match argmax_rows(&vals, t.shape(), t.dtype().is_float()) {
                Some(a) if a.len() == 1 => a[0].to_string(),
                Some(a) => {
                    let head: Vec<String> = a.iter().take(10).map(usize::to_string).collect();
                    let more = if a.len() > 10 { ", …" } else { "" };
                    format!("[{}{more}]", head.join(", "))
                }
                None => String::new(),
            };
            vec![name.clone(), t.dtype().to_string(), format!("{:?}", t.shape()), argmax, format!("[{}{more}]", shown.join(", "))]
        })
        .collect();
    table(&["OUTPUT", "DTYPE", "SHAPE", "ARGMAX", "VALUES"], &rows);
}

/// The argmax along the last axis of each row (`None` when the tensor is not scores).
fn argmax_rows(vals: &[f64], shape: &[usize], float: bool) -> Option<Vec<usize>> {
    let width = *shape.last()?;
    if !float || width < 2 || vals.is_empty() {
        return None;
    }
    Some(
        vals.chunks(width)
            .map(|row| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i))
            .collect(),
    )
}

fn fmt_num(v: f64, float: bool) -> String {
    if float { format!("{v:.4}") } else { format!("{v}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_is_per_row_not_over_the_flattened_tensor() {
        // Five rows of three class probabilities: the flattened argmax would be one number.
        let probs = [0.1, 0.7, 0.2, 0.8, 0.1, 0.1, 0.2, 0.2, 0.6, 0.3, 0.4, 0.3, 0.0, 0.1, 0.9];
        assert_eq!(argmax_rows(&probs, &[5, 3], true), Some(vec![1, 0, 2, 1, 2]));
        assert_eq!(argmax_rows(&[0.2, 0.5, 0.3], &[3], true), Some(vec![1]));
        assert_eq!(argmax_rows(&[1.0, 2.0], &[2, 1], true), None, "one score per row is not a choice");
        assert_eq!(argmax_rows(&[3.0, 1.0], &[2], false), None, "labels are not scores");
    }
}
