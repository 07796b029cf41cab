//! Load-time errors of the route language, located and quoted like a compiler's.

use std::fmt;

/// One problem in a route source: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: {message}\n{excerpt}")]
pub struct CompileError {
    /// The file path the text came from, or `"inline"` for routes written in the TOML config.
    pub source_name: String,
    /// 1-based line of the offending token.
    pub line: usize,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What is wrong, in one line.
    pub message: String,
    /// The source line, a newline, and a caret under the column, so the operator sees the spot.
    pub excerpt: String,
}

impl CompileError {
    /// Locates byte `offset` of `text` and quotes its line.
    pub(crate) fn at(source_name: &str, text: &str, offset: usize, message: String) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_start = text[..offset].rfind('\n').map_or(0, |nl| nl + 1);
        let line_end = text[offset..]
            .find('\n')
            .map_or(text.len(), |nl| offset + nl);
        let line_text = text[line_start..line_end].trim_end_matches('\r');
        let before = &text[line_start..offset];
        let line = text[..line_start].matches('\n').count() + 1;
        let column = before.chars().count() + 1;
        // Keep tabs in the caret line so the caret lands under the token in a terminal.
        let pad: String = before
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        CompileError {
            source_name: source_name.to_owned(),
            line,
            column,
            message,
            excerpt: format!("{line_text}\n{pad}^"),
        }
    }
}

/// Every problem found while compiling a set of route sources; the routes are refused when this
/// is returned, never partially loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileErrors(pub Vec<CompileError>);

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_points_at_line_and_column_with_a_caret() {
        let text = "route[a] {\n\n    if ($foo == 1)\n}\n";
        let offset = text.find("$foo").unwrap();
        let error = CompileError::at("routes.cfg", text, offset, "unknown variable $foo".into());
        assert_eq!((error.line, error.column), (3, 9));
        assert_eq!(
            error.to_string(),
            "routes.cfg:3:9: unknown variable $foo\n    if ($foo == 1)\n        ^"
        );
    }

    #[test]
    fn caret_keeps_tabs_and_counts_characters() {
        let text = "\tif (\"é\" == $x)";
        let offset = text.find("$x").unwrap();
        let error = CompileError::at("inline", text, offset, "m".into());
        assert_eq!(error.column, 13);
        assert_eq!(error.excerpt, "\tif (\"é\" == $x)\n\t           ^");
    }

    #[test]
    fn end_of_input_is_located_after_the_last_character() {
        let text = "route[a] {\r\n";
        let error = CompileError::at("f", text, text.len(), "unexpected end of file".into());
        assert_eq!((error.line, error.column), (2, 1));
        assert_eq!(error.excerpt, "\n^");
    }

    #[test]
    fn errors_display_one_after_another() {
        let errors = CompileErrors(vec![
            CompileError::at("a", "x", 0, "first".into()),
            CompileError::at("b", "y", 0, "second".into()),
        ]);
        assert_eq!(
            errors.to_string(),
            "a:1:1: first\nx\n^\nb:1:1: second\ny\n^"
        );
    }
}
