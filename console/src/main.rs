//! Mounts the Eddy dev console into the page.

fn main() {
    leptos::mount::mount_to_body(eddy_console::App);
}
