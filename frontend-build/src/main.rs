//! `cargo run -p pepeunit-frontend-build`: builds the web app if it is out of date and prints where it is.

fn main() -> std::process::ExitCode {
    let paths = pepeunit_frontend_build::Paths::detect();
    match pepeunit_frontend_build::build(&paths, &mut |line| eprintln!("{line}")) {
        Ok(report) => {
            println!("{}", report.summary());
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
