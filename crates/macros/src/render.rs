//! Types as humans write them: `Vec<f64>`, `&str`, `Result<u64, String>`.
//!
//! Export descriptions carry each type as source text. `ToTokens` followed by `to_string()`
//! spaces every token (`Vec < f64 >`), so this module re-joins the tokens with the spacing
//! rustfmt would use. It works on tokens rather than on `syn::Type` so that it covers every
//! type syntax, including ones added to the language later, at the price of being a heuristic
//! for exotic spellings (which still come out unambiguous, only less pretty).

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::ToTokens;

/// Renders `tokens` (normally a `syn::Type`) as compact, rustfmt-like source text.
pub(crate) fn type_string(tokens: &impl ToTokens) -> String {
    let mut out = String::new();
    write_stream(&mut out, tokens.to_token_stream());
    out
}

/// One printable piece: a word (identifier, literal, lifetime), an operator made of one or
/// more joint punctuation characters, or a delimited group rendered recursively.
#[derive(Debug, PartialEq)]
enum Atom {
    Word(String),
    Punct(String),
    Group(String),
}

/// Multi-character operators that can appear in a type. Other joint characters (`<'`, `,&`
/// in unspaced source) stay separate atoms so the spacing rules see them one by one.
const OPERATORS: &[&str] = &["->", "::", "=>", ">>", "&&"];

fn atoms(stream: TokenStream) -> Vec<Atom> {
    let mut out: Vec<Atom> = Vec::new();
    // Set while the previous punctuation character was `Joint` with the next token, so that
    // `-` `>` becomes `->`, `:` `:` becomes `::` and `'` `a` becomes the lifetime `'a`.
    let mut joint = false;
    for tree in stream {
        match tree {
            TokenTree::Ident(ident) => {
                let word = ident.to_string();
                match out.last_mut() {
                    Some(Atom::Punct(p)) if joint && p == "'" => {
                        *out.last_mut().expect("just matched") = Atom::Word(format!("'{word}"));
                    }
                    _ => out.push(Atom::Word(word)),
                }
                joint = false;
            }
            TokenTree::Literal(lit) => {
                out.push(Atom::Word(lit.to_string()));
                joint = false;
            }
            TokenTree::Punct(punct) => {
                let ch = punct.as_char();
                match out.last_mut() {
                    Some(Atom::Punct(p))
                        if joint && OPERATORS.contains(&format!("{p}{ch}").as_str()) =>
                    {
                        p.push(ch)
                    }
                    _ => out.push(Atom::Punct(ch.to_string())),
                }
                joint = punct.spacing() == Spacing::Joint;
            }
            TokenTree::Group(group) => {
                let mut inner = String::new();
                write_stream(&mut inner, group.stream());
                let text = match group.delimiter() {
                    Delimiter::Parenthesis => format!("({inner})"),
                    Delimiter::Bracket => format!("[{inner}]"),
                    Delimiter::Brace => format!("{{ {inner} }}"),
                    // Invisible groups come from `macro_rules!` fragments: print the contents.
                    Delimiter::None => inner,
                };
                out.push(Atom::Group(text));
                joint = false;
            }
        }
    }
    out
}

fn write_stream(out: &mut String, stream: TokenStream) {
    let atoms = atoms(stream);
    for (i, atom) in atoms.iter().enumerate() {
        if i > 0 && space_between(&atoms[i - 1], atom) {
            out.push(' ');
        }
        match atom {
            Atom::Word(s) | Atom::Punct(s) | Atom::Group(s) => out.push_str(s),
        }
    }
}

/// Whether rustfmt would put a space between two adjacent atoms of a type.
fn space_between(left: &Atom, right: &Atom) -> bool {
    const SPACED: &[&str] = &["->", "=", "+", "=>"];
    match (left, right) {
        (_, Atom::Punct(p)) if p == "," || p == ";" => false,
        (Atom::Punct(p), _) if p == "," || p == ";" => true,
        (Atom::Punct(p), _) | (_, Atom::Punct(p)) if SPACED.contains(&p.as_str()) => true,
        // `dyn Trait`, `&'a str`, `mut T`, `T as Trait`.
        (Atom::Word(_), Atom::Word(_)) => true,
        // `&mut [u8]`, `*const (u8, u16)`, but `Fn(u8)` and `fn(u8)`.
        (Atom::Word(w), Atom::Group(_)) => {
            matches!(w.as_str(), "mut" | "const" | "dyn" | "impl" | "as")
        }
        // `for<'a> Fn(&'a u8)`.
        (Atom::Punct(p), Atom::Word(_)) if p.ends_with('>') => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::type_string;

    fn ty(src: &str) -> String {
        type_string(&syn::parse_str::<syn::Type>(src).expect("a type"))
    }

    #[test]
    fn common_types_look_like_source() {
        for src in [
            "f64",
            "Vec<f64>",
            "&str",
            "&'a str",
            "&'static mut [u8]",
            "*const (u8, u16)",
            "Result<u64, String>",
            "std::collections::BTreeMap<String, Vec<Option<u32>>>",
            "(f64,)",
            "(u8, u16)",
            "()",
            "[u8; 4]",
            "*const u8",
            "Box<dyn Fn(u8) -> u8 + Send + 'static>",
            "impl Iterator<Item = u8>",
            "<T as Trait>::Assoc",
            "for<'a> fn(&'a u8) -> &'a u8",
            "!",
            "anyhow::Result<()>",
            "Cow<'_, str>",
        ] {
            assert_eq!(ty(src), src);
        }
    }

    #[test]
    fn odd_spacing_is_normalized() {
        assert_eq!(ty("Vec < f64 >"), "Vec<f64>");
        assert_eq!(ty("Result<u64,String>"), "Result<u64, String>");
        assert_eq!(ty("& 'a  mut  T"), "&'a mut T");
        assert_eq!(ty("Result<u64,&'a str>"), "Result<u64, &'a str>");
        assert_eq!(ty("Vec<Vec<Vec<u8>>>"), "Vec<Vec<Vec<u8>>>");
        assert_eq!(ty("&&str"), "&&str");
    }
}
